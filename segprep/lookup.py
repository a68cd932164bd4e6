"""Colour mask → class indices through one 256³ uint8 lookup table, vectorised.

A colour (r, g, b) has the key `(r << 16) | (g << 8) | b`; `table[key]` is its class id, `IGNORE_LABEL` for ignore
colours, or `UNKNOWN` for a colour off the palette. Keys are made 4 bytes a pixel by OpenCV's RGB→BGRA conversion
viewed as little-endian uint32 (bytes B, G, R, A → B | G<<8 | R<<16 | A<<24), so no int32 arithmetic over three
channels is ever done. Masks are converted in bands of about a million pixels, so a 10,000 × 10,000 tile never
needs a full-size key, boolean or distance array, on the good path or the error path.

What happens to off-palette colours is the caller's choice, never a silent class 0:
- "error":   the mask is rejected with an `UnknownColorsError` that names how many pixels and which colours, and
             says to try "nearest" when they look like compression noise around palette colours;
- "ignore":  they become `IGNORE_LABEL` (counted);
- "nearest": the mask is taken for a lossy copy of a palette mask (JPEG once, then saved as PNG) and restored:
             see `snap_to_present`. Masks with no off-palette colour are converted exactly, as under "error".

Over 400 lines on purpose: the nearest-colour restoration of lossy masks (`snap_to_present`) reads the same
tables and bands as the plain lookup, and `convert_mask` chooses between them; apart, each would import the other.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from segprep.palette import IGNORE_LABEL, MAX_CLASSES, Palette

UNKNOWN = MAX_CLASSES  # 254: table value for a colour off the palette
FAR = 255  # entry-table value for a colour farther than the tolerance from every palette colour
UNKNOWN_MODES = ("error", "ignore", "nearest")
DEFAULT_TOLERANCE = 30.0
MAX_TOLERANCE = 442.0  # > sqrt(3) * 255, the largest RGB distance
# "nearest" restores compression noise, not a wrong palette: a block of at least this side all farther than the
# tolerance from every palette colour is an area of a colour the palette lacks. JPEG noise is thinner: on VOC-like
# and saturated aerial masks at quality 75-95 it never fills one (checked on 10^8 pixels); a missing class does.
FAR_BLOCK = 9
_BAND_PIXELS = 1 << 20  # ~1 Mpx a band: 4 MB of keys
_CORE = np.ones((3, 3), np.uint8)
_FAR_BLOCK = np.ones((FAR_BLOCK, FAR_BLOCK), np.uint8)


class UnknownColorsError(ValueError):
    """A mask holds values that are not on the palette (and the mode does not allow them)."""

    def __init__(self, pixels: int, colors: list[tuple[tuple[int, ...], int]], kind: str = "colour",
                 distinct: int | None = None, what: str = "", advice: str = ""):
        self.pixels = pixels
        self.colors = colors  # the most frequent, most frequent first
        self.distinct = len(colors) if distinct is None else distinct
        shown = ", ".join(f"{c}×{n}" for c, n in colors[:5]) + (" ..." if self.distinct > 5 else "")
        noun = "colours" if kind == "colour" else "values"
        what = what or f"have {self.distinct} {noun} off the palette"
        advice = advice or ("Pass --palette with these classes, or --unknown_colors=ignore (→ 255)"
                            + (" / nearest (lossy colour masks)." if kind == "colour" else "."))
        super().__init__(f"{pixels} mask pixels {what}" + (f": {shown}. " if colors else ". ") + advice)


def key_color(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def _entries(palette: Palette) -> tuple[np.ndarray, np.ndarray]:
    """→ ((P, 3) int32 colours, (P,) uint8 values): every palette colour, ignore colours last (value 255)."""
    colors = np.asarray(list(palette.colors) + list(palette.ignore_colors), np.int32).reshape(-1, 3)
    values = np.asarray(list(range(palette.num_classes)) + [IGNORE_LABEL] * len(palette.ignore_colors), np.uint8)
    return colors, values


@functools.lru_cache(maxsize=8)
def build_table(palette: Palette) -> np.ndarray:
    """The 256³ uint8 table for `palette`: class id, `IGNORE_LABEL` for ignore colours, `UNKNOWN` elsewhere.
    Cached; building one takes a few milliseconds."""
    table = np.full(1 << 24, UNKNOWN, np.uint8)
    colors, values = _entries(palette)
    table[(colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]] = values
    table.setflags(write=False)
    return table


def nearest_handles(palette: Palette) -> bool:
    """Whether "nearest" can take `palette`: its entries (classes and ignore colours) must fit below `FAR`."""
    return len(palette.colors) + len(palette.ignore_colors) < FAR


def check_nearest_palette(palette: Palette) -> None:
    if not nearest_handles(palette):
        raise ValueError(f"--unknown_colors=nearest handles palettes of up to {FAR - 1} colours (classes and "
                         f"ignore colours). Received: {len(palette.colors) + len(palette.ignore_colors)}")


@functools.lru_cache(maxsize=8)
def build_entry_table(palette: Palette, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """The 256³ uint8 table of nearest palette *entries* (row of `_entries`, so each ignore colour is its own
    entry): keys within `tolerance` (Euclidean RGB distance) of a palette colour hold the nearest one's row, the
    rest `FAR`. Ties go to the earlier entry. Only the cube of side 2·tolerance around each colour is visited, so
    the default tolerance takes a fraction of a second; cached."""
    check_nearest_palette(palette)
    colors, _ = _entries(palette)
    table = np.full(1 << 24, FAR, np.uint8)
    radius = int(np.floor(min(tolerance, MAX_TOLERANCE)))
    dist_best = np.full(1 << 24, np.iinfo(np.int32).max, np.int32)
    offsets = np.arange(-radius, radius + 1)
    for entry, color in enumerate(colors.tolist()):
        axes = [np.unique(np.clip(c + offsets, 0, 255)) for c in color]
        r, g, b = np.meshgrid(*axes, indexing="ij")
        d2 = (r - color[0]) ** 2 + (g - color[1]) ** 2 + (b - color[2]) ** 2
        keep = d2 <= tolerance * tolerance
        keys = ((r << 16) | (g << 8) | b)[keep]
        d2 = d2[keep].astype(np.int32)
        closer = d2 < dist_best[keys]
        dist_best[keys[closer]] = d2[closer]
        table[keys[closer]] = entry
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=8)
def build_index_table(palette: Palette) -> np.ndarray:
    """The table for 1-channel index masks: without an index map, 0..num_classes-1 and 255 pass and the rest are
    UNKNOWN (256 entries); with one, each mapped value gives its class or 255 and the rest are UNKNOWN (up to 65,536
    entries, for 16-bit label maps). Cached."""
    if not palette.index_map:
        table = np.full(256, UNKNOWN, np.uint8)
        table[:palette.num_classes] = np.arange(palette.num_classes, dtype=np.uint8)
        table[IGNORE_LABEL] = IGNORE_LABEL
    else:
        table = np.full(max(256, palette.max_index + 1), UNKNOWN, np.uint8)
        for value, target in palette.index_map:
            table[value] = target
    table.setflags(write=False)
    return table


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A class-index map, how many of its pixels were off the palette (ignored or snapped, per the mode) and how
    many are the ignore label, counted in the pass that made them."""

    classes: np.ndarray  # (H, W) uint8
    unknown_pixels: int
    ignore_pixels: int = 0
    binary: bool = False  # an index mask of 0 and 255 only, read without an index map: its 255 is ignored


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected an (H, W, 3) uint8 RGB mask. Received: shape={rgb.shape}, dtype={rgb.dtype}")


def color_keys(rgb: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB (BGR with `bgr`) → (H, W) uint32 keys `(r << 16) | (g << 8) | b`, a view into one new
    BGRA buffer."""
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_BGR2BGRA if bgr else cv2.COLOR_RGB2BGRA)
    keys = bgra.view("<u4")[..., 0]
    np.bitwise_and(keys, 0xFFFFFF, out=keys)
    return keys


def _bands(height: int, width: int):
    """Row slices of about `_BAND_PIXELS` pixels each, starting at multiples of 8 rows (JPEG's block size)."""
    step = max(8, _BAND_PIXELS // max(1, width) // 8 * 8)
    for y in range(0, height, step):
        yield slice(y, min(height, y + step))


class ColorCounter:
    """Pixel counts of distinct colour keys, added a band at a time in memory that grows with the number of
    distinct colours (at most 2^24), never with the number of pixels."""

    _MERGE_AT = 1 << 22

    def __init__(self):
        self._keys: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._pending = 0

    def add(self, keys: np.ndarray) -> None:
        if keys.size:
            found, counts = np.unique(keys, return_counts=True)
            self._keys.append(found)
            self._counts.append(counts.astype(np.int64))
            self._pending += found.size
            if self._pending > self._MERGE_AT:
                self._merge()

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._keys) > 1:
            keys = np.concatenate(self._keys)
            counts = np.concatenate(self._counts)
            order = np.argsort(keys, kind="stable")
            keys, counts = keys[order], counts[order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            self._keys, self._counts = [keys[starts]], [np.add.reduceat(counts, starts)]
        self._pending = self._keys[0].size if self._keys else 0
        return (self._keys[0], self._counts[0]) if self._keys else (np.zeros(0, np.uint32), np.zeros(0, np.int64))

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct keys ascending, their counts)."""
        return self._merge()

    def result(self, top: int = 5) -> tuple[list[tuple[tuple[int, int, int], int]], int, np.ndarray, np.ndarray]:
        """→ (the `top` most frequent colours with counts, most frequent first; distinct count; all keys; counts)."""
        keys, counts = self._merge()
        first = np.lexsort((keys, -counts))[:top]
        return [(key_color(int(keys[i])), int(counts[i])) for i in first], int(keys.size), keys, counts


def convert_mask(mask: np.ndarray, palette: Palette, mode: str = "error",
                 tolerance: float = DEFAULT_TOLERANCE, bgr: bool = False) -> Conversion:
    """A decoded mask — (H, W, 3) RGB colours (BGR with `bgr`) or (H, W) class indices — → class indices per
    `mode`.

    Raises `UnknownColorsError` when off-palette values remain that the mode does not allow."""
    if mode not in UNKNOWN_MODES:
        raise ValueError(f"unknown_colors must be one of {UNKNOWN_MODES}. Received: {mode!r}")
    if mask.ndim == 2:
        return _convert_index(mask, palette, mode)
    _check_rgb(mask)
    table = build_table(palette)
    values = np.empty(mask.shape[:2], np.uint8)
    counter = ColorCounter() if mode == "error" else None
    count = ignored = 0
    for rows in _bands(*mask.shape[:2]):
        keys = color_keys(mask[rows], bgr)
        out = values[rows]
        np.take(table, keys, out=out, mode="clip")
        off = out == UNKNOWN
        n = int(np.count_nonzero(off))
        if n:
            count += n
            if counter is not None:
                counter.add(keys[off])
            elif mode == "ignore":
                out[off] = IGNORE_LABEL
        ignored += int(np.count_nonzero(out == IGNORE_LABEL))  # the band is in cache: no second pass
    if not count or mode == "ignore":
        return Conversion(values, count, ignored)
    if mode == "nearest":
        rgb = cv2.cvtColor(mask, cv2.COLOR_BGR2RGB) if bgr else mask
        classes = snap_to_present(rgb, palette, tolerance, out=values)
        return Conversion(classes, count, int(np.count_nonzero(classes == IGNORE_LABEL)))
    top, distinct, keys, counts = counter.result()
    near = 0
    if nearest_handles(palette):
        near = int(counts[np.take(build_entry_table(palette, tolerance), keys) != FAR].sum())
    if near >= 0.5 * count:
        raise UnknownColorsError(
            count, top, distinct=distinct,
            advice=f"{100 * near / count:.0f}% of them lie within {tolerance:g} of a palette colour, as "
                   "compression noise does (a mask saved as JPEG once): try --unknown_colors=nearest.")
    raise UnknownColorsError(count, top, distinct=distinct)


def _convert_index(mask: np.ndarray, palette: Palette, mode: str) -> Conversion:
    table = build_index_table(palette)
    hist = np.bincount(mask.ravel(), minlength=table.size)  # O(pixels), no full-size temporaries
    if hist.size > table.size:  # values beyond the table (a 16-bit mask, a palette without such keys)
        table = np.concatenate([table, np.full(hist.size - table.size, UNKNOWN, np.uint8)])
    off = hist * (table == UNKNOWN)
    count = int(off.sum())
    if count and mode != "ignore":  # "nearest" has no colours to snap
        found = np.flatnonzero(off)
        top = sorted(((int(v),), int(off[v])) for v in found)
        top.sort(key=lambda item: -item[1])
        advice = ""
        if palette.index_map:
            advice = ("The palette's index_map has no entry for them: add them to it (a class id, or 255 to "
                      "ignore), or pass --unknown_colors=ignore (→ 255).")
        raise UnknownColorsError(count, top, "index", advice=advice)
    if count:
        table = table.copy()
        table[table == UNKNOWN] = IGNORE_LABEL
    ignored = int(hist[table == IGNORE_LABEL].sum())  # hist and table have the same length here
    binary = (not palette.index_map and bool(hist[0]) and bool(hist[IGNORE_LABEL])
              and int(hist[0] + hist[IGNORE_LABEL]) == mask.size)
    return Conversion(np.take(table, mask), count, ignored, binary)


def snap_to_present(mask: np.ndarray, palette: Palette, tolerance: float = DEFAULT_TOLERANCE,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Restores a lossy copy of a palette mask: (H, W, 3) RGB → (H, W) uint8 class indices.

    1. A palette colour is *present* when at least one 3×3 block of pixels is all within `tolerance` of it (and
       nearer to it than to any other palette colour): its *core*. Compression ringing between two colours (VOC's
       cat (64, 0, 0) lies halfway between background and aeroplane) forms thin lines, never such a block, so it
       never makes a class appear that the mask does not hold.
    2. Core pixels keep their colour's class. Every other pixel (edges, ringing, colours beyond the tolerance)
       takes the nearest of the present colours with core pixels near it (in its 8×8 block or the `NEAR_BLOCKS`
       blocks around: a JPEG macroblock and its neighbours), or its own nearest palette colour when that is
       present and not a blend of two of those (a small object whose core JPEG destroyed: a yellow car on a grey
       road keeps its class; cat-coloured ringing between background and aeroplane does not become cat unless a
       real cat is near). With no core near at all, it takes the nearest present colour.
    A block of `FAR_BLOCK`² pixels all farther than `tolerance` from every palette colour is an area of a colour
    the palette lacks (a wrong or incomplete palette), not noise: it raises `UnknownColorsError` naming the
    colours there. Works in bands: memory is the output plus a few band-sized temporaries."""
    _check_rgb(mask)
    entries = build_entry_table(palette, tolerance)
    colors, values = _entries(palette)
    height, width = mask.shape[:2]
    out = np.empty((height, width), np.uint8) if out is None else out
    core = np.zeros(256, np.int64)
    far_blocks = 0
    for rows in _bands(height, width):
        e, uniform, inner = _cores(mask, entries, rows, FAR_BLOCK // 2)
        far_blocks += int(np.count_nonzero(cv2.erode((e == FAR).view(np.uint8), _FAR_BLOCK)[inner]))
        core += np.bincount(e[inner][uniform[inner]], minlength=256)
    if far_blocks:
        raise _far_error(mask, entries, tolerance, FAR_BLOCK - 1)  # erode then dilate: twice the context
    present = np.flatnonzero(core[:len(colors)])
    if not present.size:
        raise UnknownColorsError(out.size, [], what=f"hold no 3×3 block of any palette colour (within {tolerance:g})",
                                 advice="Pass --palette with this mask's classes.")
    choice = _Choice(colors[present], values[present], present, tolerance)
    for rows in _bands(height, width):
        e, uniform, inner = _cores(mask, entries, rows, _BLOCK * NEAR_BLOCKS)
        band = out[rows]
        np.take(values, e[inner], out=band, mode="clip")  # right for core pixels; FAR ones are all redone below
        todo = np.flatnonzero(~uniform[inner] | (e[inner] == FAR))
        if todo.size:
            near = choice.nearby_cores(e, uniform)
            y, x = np.divmod(todo, width)
            allowed = choice.allowed(near, (y + inner.start) // _BLOCK, x // _BLOCK, e[inner].ravel()[todo])
            band.ravel()[todo] = choice.nearest(mask[rows].reshape(-1, 3)[todo], allowed)
    return out


_BLOCK = 8
NEAR_BLOCKS = 2


class _Choice:
    """The present colours (at most 64 tracked one bit each; with more, every present colour is allowed
    everywhere) and which of them a pixel outside every core may take: see `snap_to_present`."""

    def __init__(self, colors: np.ndarray, values: np.ndarray, entries: np.ndarray, tolerance: float):
        self.colors, self.values = colors.astype(np.int32), values
        self.count = len(colors)
        self.bits = None
        if self.count <= 64:
            dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(t).bits >= self.count)
            self.bits = np.zeros(256, dtype)  # entry → its bit, 0 for colours not present and FAR
            self.bits[entries] = np.left_shift(1, np.arange(self.count)).astype(dtype)
            self.all = dtype(np.iinfo(dtype).max)
        # blend[c, a, b]: colour c lies within the tolerance of the segment from colour a to colour b
        c = colors.astype(np.float64)
        a, ab = c[:, None, :], c[None, :, :] - c[:, None, :]
        t = np.clip(((c[:, None, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-9), 0, 1)
        self.blend = np.sqrt(((c[:, None, None, :] - (a[None] + t[..., None] * ab[None])) ** 2).sum(-1)) <= tolerance
        self._cache: dict[int, int] = {}

    def nearby_cores(self, e: np.ndarray, uniform: np.ndarray) -> np.ndarray | None:
        """Per 8×8 block of `e` (whose first row is a multiple of 8 in the image), the bits of the colours with
        core pixels in it or in the `NEAR_BLOCKS` blocks around it."""
        if self.bits is None:
            return None
        core_bits = np.take(self.bits, e) * uniform
        h, w = core_bits.shape
        padded = np.zeros((-(-h // _BLOCK) * _BLOCK, -(-w // _BLOCK) * _BLOCK), core_bits.dtype)
        padded[:h, :w] = core_bits
        blocks = np.bitwise_or.reduce(padded.reshape(padded.shape[0], -1, _BLOCK), axis=2)
        blocks = np.bitwise_or.reduce(blocks.reshape(-1, _BLOCK, blocks.shape[1]), axis=1)
        for axis in (0, 1):
            spread = blocks.copy()
            for shift in range(1, NEAR_BLOCKS + 1):
                ahead, behind = [slice(None)] * 2, [slice(None)] * 2
                ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
                spread[tuple(behind)] |= blocks[tuple(ahead)]
                spread[tuple(ahead)] |= blocks[tuple(behind)]
            blocks = spread
        return blocks

    def _off_blends(self, local: int) -> int:
        """Bits of the present colours that are not a blend of two colours in `local`."""
        if local not in self._cache:
            mask = np.array([(local >> j) & 1 for j in range(self.count)], bool)
            suspect = self.blend[:, mask][:, :, mask].any((1, 2))
            self._cache[local] = sum(1 << j for j in range(self.count) if not suspect[j])
        return self._cache[local]

    def allowed(self, near: np.ndarray | None, by: np.ndarray, bx: np.ndarray, own: np.ndarray) -> np.ndarray | None:
        """Per pixel (block row, block column, own nearest entry), the bits of the colours it may take."""
        if near is None:
            return None
        kinds, which = np.unique(near, return_inverse=True)  # few distinct neighbourhoods: decide each once
        off_blends = np.array([self._off_blends(int(k)) for k in kinds], near.dtype)[which.reshape(near.shape)]
        local = near[by, bx]
        allowed = local | (np.take(self.bits, own) & off_blends[by, bx])
        allowed[local == 0] = self.all  # no core near at all: any present colour
        return allowed

    def nearest(self, px: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """(N, 3) uint8 colours → the value of the nearest allowed present colour of each."""
        px = px.astype(np.int32)
        d2 = np.zeros((len(px), self.count), np.int32)
        for ch in range(3):
            diff = px[:, ch:ch + 1] - self.colors[None, :, ch]
            d2 += diff * diff
        if allowed is not None:
            for j in range(self.count):
                d2[:, j] += ((allowed >> j) & 1 == 0).view(np.uint8).astype(np.int32) << 20  # 2^20 > 3·255²
        return self.values[d2.argmin(1)]


def _cores(mask: np.ndarray, entries: np.ndarray, rows: slice, halo: int) -> tuple[np.ndarray, np.ndarray, slice]:
    """Nearest palette entry of each pixel of `rows` and `halo` rows of context each side, and whether its 3×3
    neighbourhood agrees (outside the image counts as agreeing); → (entries, agrees, the rows' slice of them)."""
    e, inner = _entries_with_halo(mask, entries, rows, halo + 1)
    uniform = cv2.erode(e, _CORE) == cv2.dilate(e, _CORE)
    start, stop = max(0, inner.start - halo), min(e.shape[0], inner.stop + halo)  # drop the extra context row
    return e[start:stop], uniform[start:stop], slice(inner.start - start, inner.stop - start)


def _entries_with_halo(mask: np.ndarray, entries: np.ndarray, rows: slice, halo: int) -> tuple[np.ndarray, slice]:
    """Entry-table values of `rows` plus `halo` rows each side (where the mask has them); → (values, the rows'
    slice of them)."""
    top, bottom = max(0, rows.start - halo), min(mask.shape[0], rows.stop + halo)
    return np.take(entries, color_keys(mask[top:bottom])), slice(rows.start - top, rows.stop - top)


def _far_error(mask: np.ndarray, entries: np.ndarray, tolerance: float, halo: int) -> UnknownColorsError:
    """The error for a mask with areas of colours off the palette: which colours fill them, and how many pixels."""
    counter = ColorCounter()
    pixels = 0
    for rows in _bands(*mask.shape[:2]):
        e, inner = _entries_with_halo(mask, entries, rows, halo)
        far = (e == FAR).view(np.uint8)
        area = cv2.dilate(cv2.erode(far, _FAR_BLOCK), _FAR_BLOCK)[inner] & far[inner]  # the far blocks, whole
        keys = color_keys(mask[rows])[area.view(bool)]
        pixels += keys.size
        counter.add(keys)
    top, distinct, _, _ = counter.result()
    return UnknownColorsError(
        pixels, top, distinct=distinct,
        what=f"form areas ({FAR_BLOCK}×{FAR_BLOCK} px or more) of {distinct} colours farther than {tolerance:g} "
             "from every palette colour",
        advice="That is not compression noise, which --unknown_colors=nearest restores: pass --palette with "
               "these classes, or --unknown_colors=ignore (→ 255).")
