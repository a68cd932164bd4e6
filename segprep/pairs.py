"""Which images and masks a dataset holds, and in which split: the pairs of a listing, and the checks on ids and
paths. How the splits are found (by pattern, split lists or --val_fraction) is segprep/layouts.py; the patterns
themselves are segprep/patterns.py.

    --images 'JPEGImages/{id}.jpg' --masks 'SegmentationClass/{id}.png'          # the defaults: Pascal VOC
    --split_lists 'ImageSets/Segmentation/{split}.txt'                          # one id a line

Ids are checked before any path is made from them: an absolute id, a `..` segment, a backslash or a NUL is an
error record (`bad_id`), never a read outside --input_dir; so is a symbolic link that leads out of it
(`outside_root`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from segprep import layout, storage
from segprep.patterns import LayoutError, Pattern  # noqa: F401 - LayoutError: the error every layout function raises


VOC_IMAGES = f"{layout.IMAGE_DIR}/{{id}}.jpg"


VOC_MASKS = f"{layout.MASK_DIR}/{{id}}.png"


VOC_SPLIT_LISTS = f"{layout.SPLIT_DIR}/{{split}}.txt"


VAL_SPLITS = ("train", "val")  # the names --val_fraction gives


def bad_id(image_id: str) -> str | None:
    """Why `image_id` cannot be made into a path under the root, or None when it can."""
    if not image_id:
        return "an empty id"
    if "\x00" in image_id:
        return "a NUL character"
    if "\\" in image_id:
        return "a backslash"
    if image_id.startswith("/") or re.match(r"^[A-Za-z]:", image_id):
        return "an absolute path"
    if any(part in ("..", ".") for part in image_id.split("/")):
        return "a '.' or '..' path segment"
    return None


@dataclasses.dataclass(frozen=True)
class Pair:
    """One input of a split: an image and its mask (paths relative to the root), or an input already known to be
    unusable (`reason` and `error` set: a mask without its image, an image without its mask, a bad id)."""

    split: str
    image_id: str
    image: str | None
    mask: str | None
    reason: str = ""
    error: str = ""

    def to_json(self) -> str:
        return json.dumps([self.split, self.image_id, self.image, self.mask, self.reason, self.error],
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Pair:
        return cls(*json.loads(line))


@dataclasses.dataclass
class Listing:
    """What a dataset holds: the pairs of each split, where the splits came from, and splits left out.

    With split lists and an image pattern without `*`, the pairs are not kept here: `lists` names each split's
    list, and `pairs(split)` reads it again (a list of a million ids stays on disk until it is used)."""

    root: str
    images: Pattern
    masks: Pattern
    source: str  # "pattern", "lists" or "val_fraction"
    counts: dict[str, int]  # split → inputs listed (pairs, and masks or ids without a partner)
    listed: dict[str, list[Pair]] | None = None
    lists: dict[str, str] | None = None  # split → its list's path
    limit: int | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # split → why it was left out
    repeated: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # split → ids its list repeats
    shared: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # split → {id: an earlier split}

    @property
    def splits(self) -> list[str]:
        return list(self.counts)

    def pairs(self, split: str) -> list[Pair]:
        if self.listed is not None:
            return self.listed[split]
        return pairs_from_ids(split, read_list(self.lists[split], self.limit), self.images, self.masks,
                              self.shared.get(split))


def pairs_from_ids(split: str, ids: list[str], images: Pattern, masks: Pattern,
                   shared: dict[str, str] | None = None) -> list[Pair]:
    """The pairs of listed ids whose paths the patterns make (no `*`); a bad id, or one that an earlier split
    lists too (`shared`: {id: that split}), is an error record."""
    out = []
    for image_id in ids:
        why = bad_id(image_id)
        if why:
            out.append(Pair(split, image_id, None, None, "bad_id",
                            f"id {image_id!r} holds {why}: ids name files under --input_dir"))
        elif shared and image_id in shared:
            out.append(shared_pair(split, image_id, shared[image_id]))
        else:
            out.append(Pair(split, image_id, images.format(image_id, split), masks.format(image_id, split)))
    return out


def shared_pair(split: str, image_id: str, first: str) -> Pair:
    return Pair(split, image_id, None, None, "shared_id",
                f"id {image_id!r} is in split {first!r} too: one image in two splits leaks from one into the "
                "other (scores that look better than they are); fix the lists, or pass --allow_shared_ids if it "
                "is meant")


def outside_root(root: str, path: str) -> str | None:
    """Why the local file at `path` may not be read as part of the dataset at `root`: a symbolic link (of the file
    or a folder on its way) that leads outside `root`; None when it stays inside (or on an object store, which has
    no links)."""
    if storage.is_remote(path):
        return None
    real, top = os.path.realpath(path), os.path.realpath(root)
    if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
        return None
    return f"{path} leads to {real}, outside --input_dir {root} (a symbolic link); files are read from inside it only"


@dataclasses.dataclass(frozen=True)
class LayoutSpec:
    """The layout flags of prepare, scan and inspect."""

    images: str = VOC_IMAGES
    masks: str = VOC_MASKS
    split_lists: str = VOC_SPLIT_LISTS
    val_fraction: float | None = None
    group_by: str | None = None

    @property
    def is_voc(self) -> bool:
        return (self.images, self.masks, self.split_lists) == (VOC_IMAGES, VOC_MASKS, VOC_SPLIT_LISTS)

    def flags(self) -> list[str]:
        """The command-line flags that give this layout (none for VOC's defaults)."""
        out = []
        for flag, value, default in (("--images", self.images, VOC_IMAGES), ("--masks", self.masks, VOC_MASKS),
                                     ("--split_lists", self.split_lists, VOC_SPLIT_LISTS)):
            if value != default:
                out += [flag, value]
        if self.val_fraction is not None:
            out += ["--val_fraction", f"{self.val_fraction:g}"]
        if self.group_by:
            out += ["--group_by", self.group_by]
        return out


def spec_from_args(args) -> LayoutSpec:
    return LayoutSpec(args.images, args.masks, args.split_lists, args.val_fraction, args.group_by)


def is_training(split: str) -> bool:
    """Splits that get random crops unless --random_crop_splits says otherwise: train, training, Train, ..."""
    return split.lower().startswith("train")


def check_names(flag: str, value: str, known, where: str) -> list[str]:
    """The names of a comma-list flag, each one of `known`; otherwise a `LayoutError` naming the stranger."""
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if unknown:
        raise LayoutError(f"Unknown split {', '.join(unknown)} in {flag}: {where} {', '.join(known) or 'none'}.")
    return names


def read_list(path: str, limit: int | None = None, repeated: list[str] | None = None) -> list[str]:
    """The ids of a split list (one a line; see layout.parse_split_list), the first `limit` of them; ids the list
    repeats are added to `repeated` when given."""
    ids = layout.parse_split_list(storage.read_bytes(path).decode("utf-8", "replace"), repeated)
    return ids[:limit] if limit else ids
