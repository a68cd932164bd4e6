"""What a dataset's mask colours (or index values) are: class colours, compression noise around them, or thin
edges; what a palette makes of each; and the palette file `scan --write_palette` writes from them.

Which colours are classes: a colour that is "solid" (a pixel whose 3×3 neighbourhood is all that colour) at
MIN_SOLID = 9 or more pixels across the dataset — one 5×5 patch is enough, a 1–2 px line never is — is a class
candidate, unless it lies within --tolerance of a more frequent class colour: then it is compression noise around
that colour (a mask saved as JPEG once), as are colours short of that (edges, ringing, anti-aliasing).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from segprep import lookup
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR, Palette, colormap
from segprep.tools.mask_scan import MaskScan

MIN_SOLID = 9  # solid pixels (centres of 3×3 blocks of one colour) a colour needs, dataset-wide, to be a class


@dataclasses.dataclass
class Value:
    """One colour (or index value) over the whole dataset."""

    key: int
    pixels: int
    images: int
    solid: int
    role: str = ""  # "class", "noise", "thin"
    near: int | None = None  # for noise: the class colour it surrounds

    def color(self) -> tuple[int, int, int]:
        return lookup.key_color(self.key)


def aggregate(scans: list[MaskScan], index: bool) -> list[Value]:
    """Every colour (index=False) or index value (True) over the masks of that family, most pixels first."""
    parts = [s for s in scans if s.keys is not None and (s.kind == "index") == index]
    if not parts:
        return []
    keys = np.concatenate([s.keys for s in parts])
    found, inverse = np.unique(keys, return_inverse=True)
    pixels = np.bincount(inverse, np.concatenate([s.counts for s in parts]).astype(np.float64), found.size)
    solid = np.bincount(inverse, np.concatenate([s.solid for s in parts]).astype(np.float64), found.size)
    images = np.bincount(inverse, minlength=found.size)
    values = [Value(int(k), int(p), int(i), int(s)) for k, p, i, s in zip(found, pixels, images, solid)]
    return sorted(values, key=lambda v: (-v.pixels, v.key))


def classify(values: list[Value], tolerance: float) -> None:
    """Sets each colour's role: class colours (solid somewhere, not within `tolerance` of a more frequent class
    colour), noise around a class colour, or thin (never solid, far from every class colour)."""
    classes: list[Value] = []
    for v in values:  # most pixels first
        c = np.array(v.color())
        near = min(classes, key=lambda k: np.sum((np.array(k.color()) - c) ** 2), default=None)
        close = near is not None and np.sqrt(np.sum((np.array(near.color()) - c) ** 2)) <= tolerance
        if v.solid >= MIN_SOLID and not close:
            v.role = "class"
            classes.append(v)
        elif close:
            v.role, v.near = "noise", near.key
        else:
            v.role = "thin"


def _voc_name(color) -> str | None:
    if tuple(color) in VOC.colors:
        return VOC.names[VOC.colors.index(tuple(color))]
    return None


def _snap(color: tuple[int, int, int], slack: int = 2) -> tuple[int, int, int]:
    """A colour read from lossy masks, put back where JPEG most likely moved it from: onto a Pascal VOC colour
    (or VOC's border colour) within `slack` levels per channel, else each channel within `slack` of 0 or 255 onto
    it (JPEG turns a flat (0, 0, 255) into (0, 0, 254))."""
    for known in VOC.colors + (VOC_BORDER_COLOR,):
        if max(abs(a - b) for a, b in zip(color, known)) <= slack:
            return known
    return tuple(0 if c <= slack else 255 if c >= 255 - slack else c for c in color)


def is_binary(indices: list[Value]) -> bool:
    """Index values exactly 0 and 255: a 0/255 label map, whose 255 is the ignore label without an index map."""
    return sorted(v.key for v in indices) == [0, IGNORE_LABEL]


def palette_for(colors: list[Value], indices: list[Value]) -> Palette:
    """The palette --write_palette writes (see the module docstring)."""
    if indices and not colors and is_binary(indices):  # 0/255 labels: 255 is a class, not "ignore"
        return Palette(("class_0", "class_1"), ((0, 0, 0), (255, 255, 255)), index_map=((0, 0), (255, 1)))
    if indices and not colors:  # index masks: one class per value, drawn in VOC's colour map
        top = max((v.key for v in indices if v.key != IGNORE_LABEL), default=0)
        return Palette(tuple(f"class_{i}" for i in range(top + 1)), tuple(colormap(top + 1)))
    classes = [v.color() for v in colors if v.role == "class"]
    if any(v.role == "noise" for v in colors):  # lossy masks: JPEG moves flat colours by a level or two
        classes = [_snap(c) for c in classes]
    classes = sorted(set(classes))
    ignore = tuple(c for c in classes if c == VOC_BORDER_COLOR)
    classes = [c for c in classes if c != VOC_BORDER_COLOR]
    if classes and all(_voc_name(c) for c in classes):  # VOC colours: keep VOC's ids and names
        return VOC
    names = tuple(_voc_name(c) or f"class_{i}" for i, c in enumerate(classes))
    return Palette(names, tuple(classes), ignore)


def in_palette(v: Value, palette: Palette, index: bool) -> str:
    if index:
        target = dict(palette.index_map).get(v.key) if palette.index_map else (
            v.key if v.key < palette.num_classes or v.key == IGNORE_LABEL else None)
        if target is None:
            return "NOT IN PALETTE"
        if target == IGNORE_LABEL:
            return "ignore (255)"
        return palette.names[target]
    color = v.color()
    if color in palette.colors:
        return palette.names[palette.colors.index(color)]
    if color in palette.ignore_colors:
        return "ignore"
    return "NOT IN PALETTE"


def values_of(scans: list[MaskScan], tolerance: float) -> tuple[list[Value], list[Value]]:
    """(every colour, every index value) over the dataset, colours classified: computed once for the report, the
    prepare command and --write_palette."""
    colors, indices = aggregate(scans, False), aggregate(scans, True)
    classify(colors, tolerance)
    for v in indices:
        v.role = "class"
    return colors, indices
