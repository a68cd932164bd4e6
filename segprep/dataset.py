"""Reading a Pascal VOC-layout tree (local or gs://): which split lists it has and the ids in them."""

from __future__ import annotations

from segprep import layout, storage


class DatasetError(ValueError):
    """A root that is not a usable VOC tree, or a split it does not have."""


def find_splits(root: str) -> list[str]:
    """The names of the lists in ImageSets/Segmentation, sorted; raises `DatasetError` when there are none."""
    found = sorted(storage.basename(p)[:-4] for p in storage.match(layout.join(root, layout.SPLIT_DIR, "*.txt")))
    if not found:
        if not storage.exists(root):
            raise DatasetError(f"--input_dir {root} does not exist.")
        raise DatasetError(f"--input_dir {root} is not in Pascal VOC layout: expected split lists "
                           f"{layout.split_path(root, 'SPLIT')} next to {layout.IMAGE_DIR}/ and {layout.MASK_DIR}/.")
    return found


def check_names(flag: str, value: str, known, where: str) -> list[str]:
    """The names of a comma-list flag, each one of `known`; otherwise a `DatasetError` naming the stranger."""
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if unknown:
        raise DatasetError(f"Unknown split {', '.join(unknown)} in {flag}: {where} {', '.join(known) or 'none'}.")
    return names


def count_ids(root: str, wanted: str | None = None, limit: int | None = None) -> dict[str, int]:
    """{split: number of ids} as `read_splits` would list them (the first `limit`), without keeping the ids."""
    return {name: len(ids) for name, ids in read_splits(root, wanted, limit).items()}


def read_splits(root: str, wanted: str | None = None, limit: int | None = None) -> dict[str, list[str]]:
    """{split: [ids]} for the comma list `wanted` (default: every list), the first `limit` ids of each."""
    found = find_splits(root)
    names = check_names("--splits", wanted, found, f"{root} lists") if wanted else found
    lists = {}
    for name in names:
        ids = layout.parse_split_list(storage.read_bytes(layout.split_path(root, name)).decode("utf-8", "replace"))
        lists[name] = ids[:limit] if limit else ids
    return lists
