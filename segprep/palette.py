"""Class palettes: names, RGB colours, ignore colours, index maps, and index → colour rendering.

The default is Pascal VOC's 21 classes with the devkit's names and colours. VOC draws a border of colour
(224, 224, 192) around objects; it maps to the ignore label 255. A user's palette is a JSON file:

    {"names": ["background", "building", "road"],
     "colors": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],
     "ignore_colors": [[255, 255, 255]],          # optional; VOC's border colour is NOT added implicitly
     "index_map": {"0": 255, "1": 0, "2": 1}}     # optional: index-mask value → class id, or 255 (ignore)

Colour masks map through "colors" and "ignore_colors". Index masks (1-band values) are class ids as stored, or —
with "index_map" — go through it: a value the map lacks is off the palette (`--unknown_colors` decides). Keys may
be 0..65535, so 16-bit label maps read too. With an index map the colours only draw the classes, so two classes
may share one (ADE20K's own colour map does); such a palette reads index masks only.

Palettes shipped with segprep are selected by name (`PALETTES`): the datasets' own names, colours and maps.
Colours are always RGB, never BGR.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os

import numpy as np

IGNORE_LABEL = 255
# Class ids are 0..MAX_CLASSES-1; 254 is reserved as the "unknown colour" marker inside lookup tables and 255 is
# the ignore label, so masks stay 8-bit ('L') PNGs.
MAX_CLASSES = 254

VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_BORDER_COLOR = (224, 224, 192)


def colormap(n: int) -> list[tuple[int, int, int]]:
    """The first `n` colours of the devkit's bit-interleaved colour map (VOCdevkit `labelcolormap.m`)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


class PaletteError(ValueError):
    """A palette file or palette value that cannot be used."""


JSON_KEYS = ("names", "colors", "ignore_colors", "index_map", "about")  # a palette file's keys


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no colour value


@dataclasses.dataclass(frozen=True)
class Palette:
    """Class names and their RGB colours; `ignore_colors` map to `IGNORE_LABEL`."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    index_map: tuple[tuple[int, int], ...] = ()  # (stored value, class id or 255), sorted by value
    # Only for drawing classes (a run's palette read back from metadata.json or segprep.json, which keep no index
    # map): two classes may then share a colour, as with an index map.
    draw_only: bool = False

    def __post_init__(self) -> None:
        if not self.names:
            raise PaletteError("A palette needs at least one class.")
        if len(self.names) != len(self.colors):
            raise PaletteError(
                f"A palette needs one colour per class name. Received: {len(self.names)} names, "
                f"{len(self.colors)} colours.")
        if len(self.names) > MAX_CLASSES:
            raise PaletteError(f"A palette may have at most {MAX_CLASSES} classes. Received: {len(self.names)}.")
        seen: dict[tuple[int, int, int], str] = {}
        for name, color in zip(self.names + ("<ignore>",) * len(self.ignore_colors),
                               self.colors + self.ignore_colors):
            if len(color) != 3 or not all(_integer(c) and 0 <= c <= 255 for c in color):
                raise PaletteError(f"Colours must be three integers in 0..255. Received: {color!r} for {name!r}.")
            if tuple(color) in seen and not (self.index_map or self.draw_only):
                raise PaletteError(f"Colour {tuple(color)} is used by both {seen[tuple(color)]!r} and {name!r}.")
            seen.setdefault(tuple(color), name)
        for value, target in self.index_map:
            if not (_integer(value) and 0 <= value <= 65535):
                raise PaletteError(f"index_map keys must be mask values 0..65535. Received: {value!r}.")
            if not (_integer(target) and (0 <= target < len(self.names) or target == IGNORE_LABEL)):
                raise PaletteError(f"index_map maps {value} to {target!r}: a value must be a class id "
                                   f"0..{len(self.names) - 1} or {IGNORE_LABEL} (ignore).")

    @property
    def shared_color(self) -> tuple[tuple[int, int, int], str, str] | None:
        """(colour, first name, second name) when two entries share a colour (allowed with an index map only)."""
        seen: dict[tuple[int, int, int], str] = {}
        for name, color in zip(self.names + ("<ignore>",) * len(self.ignore_colors),
                               self.colors + self.ignore_colors):
            if tuple(color) in seen:
                return tuple(color), seen[tuple(color)], name
            seen[tuple(color)] = name
        return None

    @property
    def max_index(self) -> int:
        """The largest index-mask value this palette reads (wider than 255 only through an index map)."""
        return max([IGNORE_LABEL] + [v for v, _ in self.index_map])

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def color_array(self) -> np.ndarray:
        """(256, 3) uint8: row i is class i's colour; unused rows and row 255 (ignore) are the first ignore colour,
        or black when there is none. Index it with a class map to render a colour mask."""
        table = np.zeros((256, 3), np.uint8)
        if self.ignore_colors:
            table[:] = self.ignore_colors[0]
        table[: self.num_classes] = np.asarray(self.colors, np.uint8)
        return table

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        """Class-index map (H, W) uint8 → RGB colour mask (H, W, 3) uint8, one vectorised gather."""
        return self.color_array()[classes]

    def to_json(self) -> dict:
        out = {"names": list(self.names), "colors": [list(c) for c in self.colors],
               "ignore_colors": [list(c) for c in self.ignore_colors]}
        if self.index_map:
            out["index_map"] = {str(v): t for v, t in self.index_map}
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Palette:
        """A palette file's object, checked strictly: its keys (a misspelt one is named, never ignored), names a
        list of distinct strings, colours lists of three integers 0-255."""
        if not isinstance(obj, dict) or "names" not in obj or "colors" not in obj:
            raise PaletteError('A palette is a JSON object with "names" and "colors" lists '
                               '(and optional "ignore_colors" and "index_map").')
        for key in obj:
            if key not in JSON_KEYS:
                close = difflib.get_close_matches(key, JSON_KEYS, n=1, cutoff=0.5)
                raise PaletteError(f"Unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                   + f"; a palette's keys are {', '.join(JSON_KEYS)}.")
        names = obj["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PaletteError(f'"names" must be a list of strings, one per class. Received: {names!r:.60}.')
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PaletteError(f"Class names must differ; {twice[0]!r} is there more than once.")
        for key in ("colors", "ignore_colors"):
            value = obj.get(key, [])
            if not isinstance(value, list) or not all(isinstance(c, list) for c in value):
                raise PaletteError(f'"{key}" must be a list of [r, g, b] colours. Received: {value!r:.60}.')
        raw_map = obj.get("index_map") or {}
        if not isinstance(raw_map, dict):
            raise PaletteError('"index_map" must be an object {"mask value": class id or 255, ...}.')
        index_map = []
        for key, target in raw_map.items():
            try:
                value = int(key)
            except ValueError:
                raise PaletteError(f'index_map keys must be mask values such as "7". Received: {key!r}.') from None
            index_map.append((value, target))
        try:
            return cls(names=tuple(names),
                       colors=tuple(tuple(c) for c in obj["colors"]),
                       ignore_colors=tuple(tuple(c) for c in obj.get("ignore_colors", ())),
                       index_map=tuple(sorted(index_map)))
        except TypeError as e:
            raise PaletteError(f"Palette colours must be lists of three integers: {e}") from None


VOC = Palette(names=VOC_NAMES, colors=tuple(colormap(len(VOC_NAMES))), ignore_colors=(VOC_BORDER_COLOR,))


_SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "palettes")
# name → the dataset it is for; the files are segprep/palettes/NAME.json ("voc" is built in).
PALETTES = {
    "voc": "Pascal VOC 2012: 21 classes, colour or palette PNGs, border (224, 224, 192) ignored",
    "cityscapes": "Cityscapes gtFine_labelIds: label ids 0-33 → the 19 train ids, the rest ignored",
    "ade20k": "ADE20K SceneParsing: values 1-150 → classes 0-149, 0 ('other') ignored",
    "loveda": "LoveDA: values 1-7 → 7 classes, 0 (no-data) ignored",
    "potsdam": "ISPRS Potsdam/Vaihingen: RGB-coded labels, 6 classes",
    "inria": "Inria Aerial: 0 = background, 255 = building",
    "deepglobe": "DeepGlobe land cover: RGB-coded, 7 classes",
}


def shipped(name: str) -> Palette:
    """A palette shipped with segprep, by name."""
    if name == "voc":
        return VOC
    with open(os.path.join(_SHIPPED, f"{name}.json"), "rb") as f:
        return Palette.from_json(json.loads(f.read()))


def load_palette(spec: str | None) -> Palette:
    """`None` → the VOC palette; a name of `PALETTES` → that shipped palette; otherwise a JSON file, local or
    gs://."""
    from segprep import storage

    if spec in (None, ""):
        return VOC
    if spec in PALETTES:
        return shipped(spec)
    if not storage.is_remote(spec) and not os.path.exists(spec) and "/" not in spec and not spec.endswith(".json"):
        raise PaletteError(f"no palette named {spec!r} (shipped: {', '.join(PALETTES)}) and no such file.")
    data = storage.read_bytes(spec)
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as e:
        raise PaletteError(f"Palette file {spec} is not valid JSON: {e}") from None
    return Palette.from_json(obj)
