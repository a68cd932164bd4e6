"""Colour mask → class indices through one 256³ uint8 lookup table, vectorised.

A colour (r, g, b) has the key `(r << 16) | (g << 8) | b`; `table[key]` is its class id, `IGNORE_LABEL` for ignore
colours, or `UNKNOWN` for a colour off the palette. Keys are made 4 bytes a pixel by OpenCV's RGB→BGRA conversion
viewed as little-endian uint32 (bytes B, G, R, A → B | G<<8 | R<<16 | A<<24), so no int32 arithmetic over three
channels is ever done. Large masks are converted in bands of rows, so a 10,000 × 10,000 tile never needs a
full-size 32-bit key array.

What happens to off-palette colours is the caller's choice, never a silent class 0:
- "error":   the mask is rejected with an `UnknownColorsError` that names how many pixels and which colours;
- "ignore":  they become `IGNORE_LABEL` (counted);
- "nearest": each snaps to the nearest palette colour within `tolerance` (Euclidean RGB distance), which rescues
             masks saved lossy; colours further than that from every palette colour are still an error.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from segprep.palette import IGNORE_LABEL, MAX_CLASSES, Palette

UNKNOWN = MAX_CLASSES  # 254: table value for a colour off the palette
UNKNOWN_MODES = ("error", "ignore", "nearest")
DEFAULT_TOLERANCE = 30.0
_BAND_PIXELS = 1 << 20  # ~1 Mpx a band: 4 MB of keys


class UnknownColorsError(ValueError):
    """A mask holds values that are not on the palette (and the mode does not allow them)."""

    def __init__(self, pixels: int, colors: list[tuple[tuple[int, ...], int]], kind: str = "colour"):
        self.pixels = pixels
        self.colors = colors
        shown = ", ".join(f"{c}×{n}" for c, n in colors[:5]) + (" ..." if len(colors) > 5 else "")
        what = "colours" if kind == "colour" else "values"
        super().__init__(
            f"{pixels} mask pixels have {len(colors)} {what} off the palette: {shown}. Pass --palette with these "
            f"classes, or --unknown_colors=ignore (→ 255) / nearest (snap lossy colours).")


def color_key(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return (r << 16) | (g << 8) | b


def key_color(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


@functools.lru_cache(maxsize=8)
def build_table(palette: Palette, mode: str = "error", tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """The 256³ uint8 table for `palette`. Off-palette keys hold `UNKNOWN`, except under "nearest", where keys
    within `tolerance` of a palette colour hold that colour's value. Cached: building a "nearest" table takes a
    fraction of a second, a plain one a few milliseconds."""
    if mode not in UNKNOWN_MODES:
        raise ValueError(f"unknown_colors must be one of {UNKNOWN_MODES}. Received: {mode!r}")
    table = np.full(1 << 24, UNKNOWN, np.uint8)
    colors = list(palette.colors) + list(palette.ignore_colors)
    values = list(range(palette.num_classes)) + [IGNORE_LABEL] * len(palette.ignore_colors)
    if mode == "nearest" and tolerance > 0:
        _fill_nearest(table, colors, values, tolerance)
    for color, value in zip(colors, values):
        table[color_key(color)] = value
    table.setflags(write=False)
    return table


def _fill_nearest(table: np.ndarray, colors: list, values: list, tolerance: float) -> None:
    """For each palette colour, visit only the cube of side 2·tolerance around it and claim the keys that are
    within `tolerance` and closer to it than to any colour seen so far (ties go to the earlier colour)."""
    radius = int(np.floor(tolerance))
    dist_best = np.full(1 << 24, np.iinfo(np.int32).max, np.int32)
    offsets = np.arange(-radius, radius + 1)
    for color, value in zip(colors, values):
        axes = [np.clip(c + offsets, 0, 255) for c in color]
        axes = [np.unique(a) for a in axes]
        r, g, b = np.meshgrid(*axes, indexing="ij")
        d2 = (r - color[0]) ** 2 + (g - color[1]) ** 2 + (b - color[2]) ** 2
        keep = d2 <= tolerance * tolerance
        keys = ((r << 16) | (g << 8) | b)[keep]
        d2 = d2[keep].astype(np.int32)
        closer = d2 < dist_best[keys]
        dist_best[keys[closer]] = d2[closer]
        table[keys[closer]] = value


def build_index_table(num_classes: int) -> np.ndarray:
    """The 256-entry table for 1-channel class-index masks: 0..num_classes-1 and 255 pass, the rest are UNKNOWN."""
    table = np.full(256, UNKNOWN, np.uint8)
    table[:num_classes] = np.arange(num_classes, dtype=np.uint8)
    table[IGNORE_LABEL] = IGNORE_LABEL
    return table


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A class-index map and how many of its pixels were off the palette (already resolved by the mode)."""

    classes: np.ndarray  # (H, W) uint8
    unknown_pixels: int


def colors_to_classes(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (H, W) uint8 table values, for a mask of any size that fits in one key array.
    Values may include `UNKNOWN`; `convert_mask` resolves them."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected an (H, W, 3) uint8 RGB mask. Received: shape={rgb.shape}, dtype={rgb.dtype}")
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    keys = bgra.view("<u4")[..., 0]
    np.bitwise_and(keys, 0xFFFFFF, out=keys)
    return np.take(table, keys)


def convert_mask(mask: np.ndarray, palette: Palette, mode: str = "error",
                 tolerance: float = DEFAULT_TOLERANCE) -> Conversion:
    """A decoded mask — (H, W, 3) RGB colours or (H, W) class indices — → class indices per `mode`.

    Raises `UnknownColorsError` when off-palette values remain that the mode does not allow."""
    if mask.ndim == 2:
        values = np.take(build_index_table(palette.num_classes), mask)
        kind = "index"
        count = int(np.count_nonzero(values == UNKNOWN))
    else:
        values = np.empty(mask.shape[:2], np.uint8)
        table = build_table(palette, mode, tolerance)
        kind = "colour"
        count = 0
        band = max(1, _BAND_PIXELS // max(1, mask.shape[1]))
        for y in range(0, mask.shape[0], band):
            out = values[y:y + band]
            out[:] = colors_to_classes(mask[y:y + band], table)
            count += int(np.count_nonzero(out == UNKNOWN))
    if count:
        unknown = values == UNKNOWN
        if mode != "ignore":  # "nearest" cannot snap index values, nor colours beyond the tolerance
            raise UnknownColorsError(count, _unknown_summary(mask, unknown, kind), kind)
        values[unknown] = IGNORE_LABEL
    return Conversion(values, count)


def _unknown_summary(mask: np.ndarray, unknown: np.ndarray, kind: str) -> list[tuple[tuple[int, ...], int]]:
    """The off-palette colours (or index values), most frequent first."""
    if kind == "index":
        found, counts = np.unique(mask[unknown], return_counts=True)
        items = [((int(v),), int(n)) for v, n in zip(found, counts)]
    else:
        px = mask[unknown].astype(np.uint32)  # only the unknown pixels: small in any mask worth rescuing
        keys = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
        found, counts = np.unique(keys, return_counts=True)
        items = [(key_color(int(k)), int(n)) for k, n in zip(found, counts)]
    return sorted(items, key=lambda item: -item[1])
