"""Which images and masks a dataset holds, and in which split: pairs found by path patterns, in any layout.

    --images 'JPEGImages/{id}.jpg' --masks 'SegmentationClass/{id}.png'          # the defaults: Pascal VOC
    --split_lists 'ImageSets/Segmentation/{split}.txt'                          # one id a line
    --images 'leftImg8bit/{split}/*/{id}_leftImg8bit.png' \\
    --masks 'gtFine/{split}/*/{id}_gtFine_labelIds.png'                         # Cityscapes

A pattern is a path relative to --input_dir, '/'-separated, in which
- `{id}` is the pairing key: an image and a mask with the same id (and split, and `*` values) are a pair;
- `{split}` names the split: that part of the path, kept as the archive writes it (`training`, `Train`, ...);
- `*` is any part of one path segment; the value the i-th `*` takes in an image's path is used for the i-th `*`
  of its mask's path (so a mask pattern has at most as many as the image pattern);
- everything else is literal (no `?` or `[...]`). Files and folders whose names start with a dot (macOS's `._x.jpg`
  shadows, `.DS_Store`) never match a wildcard.

Splits come from, in this order: `{split}` in the image pattern; split lists (`--split_lists`, a pattern with
`{split}`) when any exist; `--val_fraction F`, which holds out round(F × groups) of the pairs, picked by a seeded
hash, as "val" and keeps the rest as "train" (`--group_by REGEX`: the ids whose first capture group is equal are
one group, so tiles of one area never straddle the two).

With split lists and an image pattern without `*`, the listed ids make the paths: nothing is listed (a missing
file is found when it is read). Otherwise each pattern is listed once: locally one `scandir` per folder the
pattern can reach, on gs:// one listing of the prefix before the first wildcard (Beam's FileSystems.match).

Ids are checked before any path is made from them: an absolute id, a `..` segment, a backslash or a NUL is an
error record (`bad_id`), never a read outside --input_dir.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex

from segprep import layout, storage
from segprep.crops import stable_hash

VOC_IMAGES = f"{layout.IMAGE_DIR}/{{id}}.jpg"
VOC_MASKS = f"{layout.MASK_DIR}/{{id}}.png"
VOC_SPLIT_LISTS = f"{layout.SPLIT_DIR}/{{split}}.txt"
VAL_SPLITS = ("train", "val")  # the names --val_fraction gives

_FIELD = re.compile(r"\{(id|split)\}|\*")


class LayoutError(ValueError):
    """A pattern, flag or tree that cannot be read as a dataset: a usage mistake, told in one line."""


@dataclasses.dataclass(frozen=True)
class Match:
    image_id: str
    split: str | None
    stars: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A checked path pattern (see the module docstring)."""

    flag: str
    text: str

    @classmethod
    def parse(cls, flag: str, text: str, need_id: bool = True, need_split: bool = False) -> Pattern:
        bad = None
        if not text or text.startswith("/") or "\\" in text or "\x00" in text:
            bad = "must be a '/'-separated path relative to --input_dir"
        elif any(part in ("", ".", "..") for part in text.split("/")):
            bad = "must not hold empty, '.' or '..' path segments"
        elif re.search(r"\{(?!id\}|split\})", text) or re.search(r"(?<!\{id)(?<!\{split)\}", text):
            bad = "knows only the fields {id} and {split} (and * for one path segment)"
        elif text.count("{id}") > 1 or text.count("{split}") > 1:
            bad = "may hold {id} and {split} once each"
        elif need_id and "{id}" not in text:
            bad = "needs {id}, the key that pairs an image with its mask"
        elif need_split and "{split}" not in text:
            bad = "needs {split}, the part of the path that names the split"
        elif re.search(r"(\{id\}|\{split\}|\*)(\{id\}|\{split\}|\*)", text):
            bad = "needs literal text between two fields (e.g. {id}_{split}), or the match is ambiguous"
        if bad:
            raise LayoutError(f"{flag} {text!r} {bad}.")
        return cls(flag, text)

    @functools.cached_property
    def stars(self) -> int:
        return self.text.count("*")

    @property
    def has_split(self) -> bool:
        return "{split}" in self.text

    @functools.cached_property
    def _regex(self) -> re.Pattern:
        parts, star = [], 0
        pos = 0
        for m in _FIELD.finditer(self.text):
            parts.append(re.escape(self.text[pos:m.start()]))
            if m.group(0) == "*":
                parts.append(f"(?P<s{star}>[^/]*)")
                star += 1
            else:
                parts.append(f"(?P<{m.group(1)}>[^/]+)")
            pos = m.end()
        parts.append(re.escape(self.text[pos:]))
        return re.compile("".join(parts) + r"\Z")

    def match(self, rel: str) -> Match | None:
        m = self._regex.match(rel)
        if m is None:
            return None
        groups = m.groupdict()
        return Match(groups.get("id") or "", groups.get("split"), tuple(groups[s] for s in self._star_groups))

    @functools.cached_property
    def _star_groups(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.stars))

    def format(self, image_id: str = "{id}", split: str | None = None, stars: tuple[str, ...] = ()) -> str:
        """The path for these values; a value not given stays as its field (for messages)."""
        out, star, pos = [], 0, 0
        for m in _FIELD.finditer(self.text):
            out.append(self.text[pos:m.start()])
            if m.group(0) == "*":
                out.append(stars[star] if star < len(stars) else "*")
                star += 1
            elif m.group(1) == "id":
                out.append(image_id)
            else:
                out.append(split if split is not None else "{split}")
            pos = m.end()
        out.append(self.text[pos:])
        return "".join(out)

    def glob(self) -> str:
        return _FIELD.sub("*", self.text)


def _segment_regex(segment: str) -> re.Pattern:
    return re.compile("".join("[^/]*" if tok == "*" else re.escape(tok) for tok in re.split(r"(\*)", segment))
                      + r"\Z")


def list_matches(root: str, pattern: Pattern) -> list[tuple[str, Match]]:
    """(path relative to `root`, what the fields matched) of every file `pattern` matches, sorted by path. Names
    starting with a dot never match a wildcard (they may match a literal '.x' of the pattern)."""
    if storage.is_remote(root):
        prefix = root.rstrip("/") + "/"
        literal_dots = {i for i, seg in enumerate(pattern.text.split("/")) if seg.startswith(".")}
        rels = [p[len(prefix):] for p in storage.match(prefix + pattern.glob()) if p.startswith(prefix)]
        rels = [rel for rel in rels if not any(seg.startswith(".") and i not in literal_dots
                                               for i, seg in enumerate(rel.split("/")))]
    else:
        rels = _walk_local(root, pattern.glob().split("/"))  # skips dot names itself
    out = []
    for rel in rels:
        m = pattern.match(rel)
        if m is not None:
            out.append((rel, m))
    out.sort(key=lambda item: item[0])
    return out


def _walk_local(root: str, segments: list[str]) -> list[str]:
    """Local listing, a folder at a time: literal segments are joined, wildcard ones read with one scandir."""
    frontier = [""]
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        nxt = []
        if "*" not in segment:
            for rel in frontier:
                cand = f"{rel}/{segment}" if rel else segment
                full = os.path.join(root, cand)
                if (os.path.isfile(full) if last else os.path.isdir(full)):
                    nxt.append(cand)
        else:
            regex = _segment_regex(segment)
            for rel in frontier:
                try:
                    with os.scandir(os.path.join(root, rel) if rel else root) as it:
                        for entry in it:
                            if entry.name.startswith(".") or not regex.match(entry.name):
                                continue
                            try:
                                ok = entry.is_file() if last else entry.is_dir()
                            except OSError:
                                continue
                            if ok:
                                nxt.append(f"{rel}/{entry.name}" if rel else entry.name)
                except OSError:  # not a folder, unreadable or gone
                    continue
        frontier = nxt
        if not frontier:
            break
    return frontier


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


def read_list(path: str, limit: int | None = None, repeated: list[str] | None = None) -> list[str]:
    """The ids of a split list (one a line; see layout.parse_split_list), the first `limit` of them; ids the list
    repeats are added to `repeated` when given."""
    ids = layout.parse_split_list(storage.read_bytes(path).decode("utf-8", "replace"), repeated)
    return ids[:limit] if limit else ids


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
                          + (f" (it looks like {suggest(root)[0]}: see the README's Datasets section)"
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


# Known archives: marker paths that tell them, and the flags that read them (the README's Datasets section).
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
