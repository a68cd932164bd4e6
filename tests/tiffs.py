"""Tiled and stripped TIFFs made from a function of (y, x), segment by segment: a 40,000² tile is written, and its
every crop checked, without any whole image in memory."""

from __future__ import annotations

import numpy as np


def pattern_image(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """RGB values that differ between neighbours in every direction, so a crop off by one pixel never matches."""
    return np.stack([(y * 7 + x) % 256, (x * 3 + y // 5) % 256, (y ^ x) & 255], -1).astype(np.uint8)


def pattern_classes(y: np.ndarray, x: np.ndarray, classes: int = 5) -> np.ndarray:
    """Class ids in blocks of 37 × 53 px, with a row of the ignore label every 311 rows."""
    out = ((y // 37 + x // 53) % classes).astype(np.uint8)
    out[y % 311 == 0] = 255
    return out


def region(fn, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """`fn` evaluated over rows y0..y1-1 and columns x0..x1-1."""
    y, x = np.mgrid[y0:y1, x0:x1]
    return fn(y, x)


def write_tiff(path: str, fn, height: int, width: int, tile: int | None = 256, rows_per_strip: int = 64,
               compression: str | None = "deflate") -> None:
    """A TIFF of `fn` over `height` × `width`: tiled (`tile`² segments, written one at a time) or, with `tile`
    None, stripped (written from the whole image: small files only). RGB when `fn` gives 3 values a pixel, grey
    (class ids) when it gives one."""
    import tifffile

    sample = fn(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64))
    bands = sample.shape[2] if sample.ndim == 3 else 1
    shape = (height, width, bands) if bands > 1 else (height, width)
    if tile:
        segments = (region(fn, y, y + tile, x, x + tile)
                    for y in range(0, height, tile) for x in range(0, width, tile))
        layout = {"tile": (tile, tile)}
    else:  # tifffile takes whole pages for strips: small files only
        segments = region(fn, 0, height, 0, width)
        layout = {"rowsperstrip": rows_per_strip}
    tifffile.imwrite(path, segments, shape=shape, dtype=sample.dtype, photometric="rgb" if bands == 3 else
                     "minisblack", compression=compression, **layout)
