"""How a dataset's splits are found, in this order: `{split}` in the image pattern; split lists (`--split_lists`,
a pattern with `{split}`) when any exist; `--val_fraction F`, which holds out round(F × groups) of the pairs, picked
by a seeded hash, as "val" and keeps the rest as "train" (`--group_by REGEX`: the ids whose first capture group is
equal are one group, so tiles of one area never straddle the two). `find` is the one entry point.

With split lists and an image pattern without `*`, the listed ids make the paths: nothing is listed (a missing
file is found when it is read). With split lists, an id that a later split lists again is an error record there
(unless allowed), and a list that is the union of others (VOC's trainval) is left out unless named.
"""

from __future__ import annotations

import dataclasses
import re
import shlex

from segprep import layout, storage
from segprep.crops import stable_hash
from segprep.pairs import VAL_SPLITS, LayoutSpec, Listing, Pair, check_names, pairs_from_ids, read_list
from segprep.patterns import LayoutError, Pattern, list_matches


def find(root: str, spec: LayoutSpec, wanted: str | None = None, limit: int | None = None,
         seed: int = 0, allow_shared: bool = True) -> Listing:
    """Every pair of every split (or of the comma list `wanted`), the first `limit` of each; raises
    `LayoutError` for a usage mistake (bad pattern, unknown split, no split to be found). With split lists, an id
    that a later split lists again is an error record there unless `allow_shared`, and a split that is the union
    of others (VOC's trainval) is left out unless `wanted` names it."""
    root = root.rstrip("/")
    images = Pattern.parse("--images", spec.images)
    masks = Pattern.parse("--masks", spec.masks)
    if masks.stars > images.stars:
        raise LayoutError(f"--masks {spec.masks!r} has {masks.stars} '*' but --images {spec.images!r} has "
                          f"{images.stars}: each * of the masks takes the value of the same * in the images.")
    if masks.has_split and not images.has_split:
        raise LayoutError(f"--masks {spec.masks!r} has {{split}} but --images {spec.images!r} does not: the "
                          "split comes from the image's path.")
    group = None
    if spec.group_by:
        try:
            group = re.compile(spec.group_by)
        except re.error as e:
            raise LayoutError(f"--group_by {spec.group_by!r} is not a regular expression: {e}.") from None
        if spec.val_fraction is None:
            raise LayoutError("--group_by works with --val_fraction: pass both.")
    if images.has_split:
        if spec.val_fraction is not None:
            raise LayoutError(f"--val_fraction: the splits already come from {{split}} in --images "
                              f"{spec.images!r}; drop --val_fraction, or drop {{split}} from the patterns.")
        listing = _by_pattern(root, images, masks, wanted)
    else:
        lists = _split_lists(root, spec.split_lists)
        if lists and spec.val_fraction is not None:
            raise LayoutError(f"--val_fraction: {root} already has split lists ({spec.split_lists}: "
                              f"{', '.join(lists)}); drop --val_fraction, or point --split_lists elsewhere.")
        if lists:
            listing = _by_lists(root, images, masks, lists, wanted, limit, allow_shared)
        elif spec.val_fraction is not None:
            listing = _by_fraction(root, images, masks, spec.val_fraction, group, seed, wanted)
        else:
            raise LayoutError(_no_splits_message(root, spec))
    if limit and listing.listed is not None:
        listing.listed = {split: pairs[:limit] for split, pairs in listing.listed.items()}
        listing.counts = {split: len(pairs) for split, pairs in listing.listed.items()}
    elif limit:
        listing.counts = {split: min(n, limit) for split, n in listing.counts.items()}
    listing.limit = limit
    return listing


def _no_splits_message(root: str, spec: LayoutSpec) -> str:
    if not storage.exists(root):
        return f"--input_dir {root} does not exist."
    hint = suggest(root)
    if spec.is_voc:
        where = (f"--input_dir {root} is not in Pascal VOC layout: expected split lists "
                 f"{layout.join(root, spec.split_lists)} next to {layout.IMAGE_DIR}/ and {layout.MASK_DIR}/")
        if hint:
            return f"{where}. It looks like {hint[0]}: pass {shlex.join(hint[1])}."
        return where + "; for another layout pass --images and --masks (see --help)."
    return (f"--input_dir {root}: no splits found: --images {spec.images!r} has no {{split}} and no split list "
            f"matches --split_lists {spec.split_lists!r}; pass --val_fraction F (e.g. 0.1) to hold out a share as "
            "'val', or --split_lists PATTERN.")


def _split_lists(root: str, text: str) -> dict[str, str]:
    """{split: list path} for the split lists the pattern finds, in name order."""
    pattern = Pattern.parse("--split_lists", text, need_id=False, need_split=True)
    found = {}
    for rel, m in list_matches(root, pattern):
        if m.split:
            found.setdefault(m.split, layout.join(root, rel))
    return dict(sorted(found.items()))


def _by_lists(root: str, images: Pattern, masks: Pattern, lists: dict[str, str], wanted: str | None,
              limit: int | None, allow_shared: bool) -> Listing:
    names = check_names("--splits", wanted, list(lists), f"{root} lists") if wanted else list(lists)
    repeated: dict[str, list[str]] = {}
    ids = {}
    for split in names:
        repeated[split] = []
        ids[split] = read_list(lists[split], limit, repeated[split])
    skipped = {} if wanted else _unions(ids)
    names = [n for n in names if n not in skipped]
    lists = {split: lists[split] for split in names}
    shared = {} if allow_shared else _shared({split: ids[split] for split in names})
    notes = dict(skipped=skipped, repeated={s: r for s, r in repeated.items() if r and s in lists}, shared=shared)
    if not images.stars:  # the ids make the paths: nothing to list
        return Listing(root, images, masks, "lists", {s: len(ids[s]) for s in names}, lists=lists, **notes)
    index = _index(root, images, masks)
    listed = {}
    for split in names:
        listed[split] = []
        for pair in pairs_from_ids(split, ids[split], images, masks, shared.get(split)):
            listed[split].append(pair if pair.reason else _from_index(index, images, masks, split, pair.image_id))
    return Listing(root, images, masks, "lists", {s: len(p) for s, p in listed.items()}, listed=listed, **notes)


def _unions(ids: dict[str, list[str]]) -> dict[str, str]:
    """{split: why it is left out} for the splits that hold every id of two or more others (VOC's trainval: train
    and val together): read by default, they would repeat those splits' images."""
    sets = {split: set(found) for split, found in ids.items()}
    out = {}
    for split, held in sets.items():
        parts = [other for other, theirs in sets.items() if other != split and theirs and theirs <= held
                 and theirs != held]
        if len(parts) >= 2:
            out[split] = f"it lists every id of {' and '.join(parts)} (their union); pass --splits to read it"
    return out


def _shared(ids: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """{split: {id: the earlier split that lists it}} for ids listed by more than one split (in split order)."""
    first: dict[str, str] = {}
    shared: dict[str, dict[str, str]] = {}
    for split, found in ids.items():
        for image_id in found:
            owner = first.setdefault(image_id, split)
            if owner != split:
                shared.setdefault(split, {})[image_id] = owner
    return shared


def _index(root: str, images: Pattern, masks: Pattern) -> tuple[dict, dict]:
    """({id: [image Match, path]}, {(id, stars): mask path}) for split lists with * in the patterns."""
    by_id: dict[str, list] = {}
    for rel, m in list_matches(root, images):
        by_id.setdefault(m.image_id, []).append((m, rel))
    mask_paths = {}
    for rel, m in list_matches(root, masks):
        mask_paths[(m.image_id, m.stars)] = rel
    return by_id, mask_paths


def _from_index(index, images: Pattern, masks: Pattern, split: str, image_id: str) -> Pair:
    by_id, mask_paths = index
    found = by_id.get(image_id, [])
    if not found:
        return Pair(split, image_id, None, None, "missing_image",
                    f"no image for id {image_id!r}: nothing matches {images.format(image_id, split)}")
    if len(found) > 1:
        return Pair(split, image_id, None, None, "ambiguous_id",
                    f"id {image_id!r} matches {len(found)} images ({', '.join(p for _, p in found[:3])}); the "
                    "split list cannot say which one")
    m, rel = found[0]
    stars = m.stars[:masks.stars]
    mask = mask_paths.get((image_id, stars))
    if mask is None:
        return Pair(split, image_id, rel, None, "missing_mask",
                    f"no mask for image {rel}: looked for {masks.format(image_id, split, stars)}")
    return Pair(split, image_id, rel, mask)


def _pair_listed(root: str, images: Pattern, masks: Pattern) -> list[tuple[str | None, Pair]]:
    """Every image and every mask the patterns list, paired: [(split or None, Pair)], unpaired ones as errors.
    Ids that repeat within a split (the same {id} under different * values) are qualified with their * values."""
    mask_split = masks.has_split
    k = masks.stars
    mask_files = {}
    for rel, m in list_matches(root, masks):
        mask_files[(m.split if mask_split else None, m.stars, m.image_id)] = rel
    used = set()
    found = []
    for rel, m in list_matches(root, images):
        key = (m.split if mask_split else None, m.stars[:k], m.image_id)
        mask = mask_files.get(key)
        found.append((m, rel, mask))
        if mask is not None:
            used.add(key)
    seen: dict[tuple, int] = {}  # (split, id) → images
    ids: dict[str, int] = {}  # id → images, over every split
    for m, _, _ in found:
        seen[(m.split, m.image_id)] = seen.get((m.split, m.image_id), 0) + 1
        ids[m.image_id] = ids.get(m.image_id, 0) + 1
    out = []
    for m, rel, mask in found:
        image_id = m.image_id
        if seen[(m.split, image_id)] > 1 and m.stars:
            image_id = "/".join(m.stars + (image_id,))
        if mask is None:
            want = masks.format(m.image_id, m.split, m.stars[:k])
            out.append((m.split, Pair(m.split or "", image_id, rel, None, "missing_mask",
                                      f"no mask for image {rel}: looked for {want}")))
        else:
            out.append((m.split, Pair(m.split or "", image_id, rel, mask)))
    for (split, stars, image_id), rel in mask_files.items():
        if (split, stars, image_id) not in used:
            want = images.format(image_id, split, stars)
            clash = seen.get((split, image_id), 0) if mask_split else ids.get(image_id, 0)
            qualified = "/".join(stars + (image_id,)) if stars and clash else image_id
            out.append((split, Pair(split or "", qualified, None, rel, "missing_image",
                                    f"no image for mask {rel}: looked for {want}")))
    return out


def _by_pattern(root: str, images: Pattern, masks: Pattern, wanted: str | None) -> Listing:
    paired = _pair_listed(root, images, masks)
    splits: dict[str, list[Pair]] = {}
    orphans = []
    for split, pair in paired:
        if split is None:  # a mask without {split} that no image claimed
            orphans.append(pair)
        else:
            splits.setdefault(split, []).append(pair)
    found = sorted(splits)
    if not found:
        raise LayoutError(f"--input_dir {root}: no image matches --images {images.text!r}"
                          + (f" (it looks like {suggest(root)[0]}: see docs/datasets.md)"
                             if suggest(root) else "") + ".")
    skipped = {}
    if wanted:
        names = check_names("--splits", wanted, found, f"{root} has")
    else:
        names = []
        for split in found:
            if all(p.mask is None for p in splits[split]):
                skipped[split] = (f"{len(splits[split])} images, no mask matches --masks {masks.text!r} "
                                  "(pass --splits to name the splits to read)")
            else:
                names.append(split)
        if not names:
            raise LayoutError(f"--input_dir {root}: no split has masks to read"
                              + "".join(f"; {s}: {why}" for s, why in skipped.items()) + ".")
    chosen = {s: _sorted(splits[s]) for s in names}
    if orphans and chosen:
        first = next(iter(chosen))
        chosen[first] = chosen[first] + _sorted(orphans)
    return Listing(root, images, masks, "pattern", {s: len(p) for s, p in chosen.items()}, listed=chosen,
                   skipped=skipped)


def _sorted(pairs: list[Pair]) -> list[Pair]:
    return sorted(pairs, key=lambda p: (p.image or p.mask or "", p.image_id))


def group_key(image_id: str, group: re.Pattern | None) -> str:
    if group is None:
        return image_id
    m = group.search(image_id)
    if m is None:
        return image_id
    return m.group(1) if m.groups() else m.group(0)


def by_blocks(root: str, spec, wanted: str | None = None, limit: int | None = None) -> Listing:
    """--val_fraction with --split_by blocks: every pair in "train", whose val blocks make "val" (segprep/blocks.py):
    both splits list every image; the pairs are read once, under "train"."""
    images, masks = Pattern.parse("--images", spec.images), Pattern.parse("--masks", spec.masks)
    if images.has_split or _split_lists(root, spec.split_lists):
        raise LayoutError("--split_by blocks makes train and val of every image: its layout must have no splits of "
                          "its own ({split} in --images, or split lists); drop them, or --split_by.")
    if spec.group_by:
        raise LayoutError("--group_by keeps images together in one split; --split_by blocks splits each image: "
                          "choose one.")
    pairs = [dataclasses.replace(pair, split="train") for _, pair in _pair_listed(root, images, masks)]
    if not pairs:
        raise LayoutError(f"--input_dir {root}: no image matches --images {images.text!r}.")
    if wanted:
        check_names("--splits", wanted, list(VAL_SPLITS), "--split_by blocks makes")
    pairs = _sorted(pairs)[:limit] if limit else _sorted(pairs)
    return Listing(root, images, masks, "blocks", {"train": len(pairs), "val": len(pairs)},
                   listed={"train": pairs, "val": []})


def _by_fraction(root: str, images: Pattern, masks: Pattern, fraction: float, group: re.Pattern | None, seed: int,
                 wanted: str | None) -> Listing:
    pairs = [pair for _, pair in _pair_listed(root, images, masks)]
    if not pairs:
        raise LayoutError(f"--input_dir {root}: no image matches --images {images.text!r}.")
    keys = sorted({group_key(p.image_id, group) for p in pairs})
    count = round(fraction * len(keys))
    if len(keys) > 1:
        count = min(max(count, 1), len(keys) - 1)  # both splits get at least one group
    order = sorted(keys, key=lambda k: (stable_hash(seed, "val", k), k))
    val = set(order[:count])
    splits = {"train": [], "val": []}
    for p in pairs:
        split = "val" if group_key(p.image_id, group) in val else "train"
        splits[split].append(dataclasses.replace(p, split=split))
    names = check_names("--splits", wanted, list(VAL_SPLITS), "--val_fraction makes") if wanted else VAL_SPLITS
    chosen = {s: _sorted(splits[s]) for s in names}
    return Listing(root, images, masks, "val_fraction", {s: len(p) for s, p in chosen.items()}, listed=chosen)


# Known archives: marker paths that tell them, and the flags that read them (docs/datasets.md).
KNOWN = {
    "Cityscapes": (("leftImg8bit", "gtFine"),
                   ["--images", "leftImg8bit/{split}/*/{id}_leftImg8bit.png",
                    "--masks", "gtFine/{split}/*/{id}_gtFine_labelIds.png", "--splits", "train,val",
                    "--palette", "cityscapes"]),
    "ADE20K": (("images/training", "annotations/training"),
               ["--images", "images/{split}/{id}.jpg", "--masks", "annotations/{split}/{id}.png",
                "--palette", "ade20k"]),
    "LoveDA": (("Train/Rural/images_png",),
               ["--images", "{split}/*/images_png/{id}.png", "--masks", "{split}/*/masks_png/{id}.png",
                "--splits", "Train,Val", "--palette", "loveda"]),
    "ISPRS Potsdam": (("2_Ortho_RGB", "5_Labels_all"),
                      ["--images", "2_Ortho_RGB/top_potsdam_{id}_RGB.tif",
                       "--masks", "5_Labels_all/top_potsdam_{id}_label.tif", "--palette", "potsdam",
                       "--val_fraction", "0.2"]),
    "Inria Aerial": (("train/images", "train/gt"),
                     ["--images", "train/images/{id}.tif", "--masks", "train/gt/{id}.tif", "--palette", "inria",
                      "--val_fraction", "0.2"]),
}


def suggest(root: str) -> tuple[str, list[str]] | None:
    """(dataset name, flags) when `root` holds the folders of a known archive; local or gs://."""
    for name, (markers, flags) in KNOWN.items():
        if all(storage.exists(layout.join(root, m)) for m in markers):
            return name, flags
    return None
