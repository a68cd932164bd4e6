"""Crop windows: random crops for training, covering tiles for evaluation, and cutting them out with padding.

Randomness is drawn once per crop from a generator seeded by (seed, image id, crop number) and the same window is
then cut from image and mask alike, so the output does not depend on the runner, worker count or bundle order,
and asking for more crops keeps the earlier ones.

A window may run past the edge of an image smaller than the crop: the image is padded with 0 and the mask with
the ignore label 255; the window's offset is always a pixel inside the source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from segprep.palette import IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class CropBox:
    """A crop window: top-left pixel (y, x) in the source and its size; it may extend past the source's edge."""

    y: int
    x: int
    height: int
    width: int


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same in every process and on every machine (unlike `hash()`)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def crop_rng(seed: int, image_id: str, k: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_hash("crop", image_id), k])


def auto_crop_count(height: int, width: int, crop: int) -> int:
    """About one pass over the image's area: a 10,000² tile gives 1,526 crops of 256², a 500×375 photo 3."""
    return max(1, math.ceil(height * width / (crop * crop)))


def _draw(rng: np.random.Generator, height: int, width: int, crop: int) -> CropBox:
    y = int(rng.integers(0, height - crop + 1)) if height > crop else 0
    x = int(rng.integers(0, width - crop + 1)) if width > crop else 0
    return CropBox(y, x, crop, crop)


def is_dominated(mask_crop: np.ndarray, cat_max_ratio: float) -> bool:
    """MMSegmentation's `cat_max_ratio` test on a crop's class map: True when one class covers more than the ratio
    of its labelled pixels, or only one class is present."""
    counts = np.bincount(mask_crop.ravel(), minlength=256)[:IGNORE_LABEL]
    counts = counts[counts > 0]
    return len(counts) <= 1 or counts.max() / counts.sum() >= cat_max_ratio


def random_crop(height: int, width: int, crop: int, seed: int, image_id: str, k: int,
                dominated=None, max_tries: int = 10) -> CropBox:
    """Random window number `k` of `crop`² in an image of `height` × `width`. With `dominated` (a function of a
    window: True when one class dominates it), the window is re-drawn from the same generator while it is
    dominated, at most `max_tries` draws in all, keeping the last."""
    rng = crop_rng(seed, image_id, k)
    box = _draw(rng, height, width, crop)
    if dominated is not None:
        for _ in range(max_tries - 1):
            if not dominated(box):
                break
            box = _draw(rng, height, width, crop)
    return box


def random_crops(height: int, width: int, crop: int, count: int, seed: int, image_id: str,
                 classes: np.ndarray | None = None, cat_max_ratio: float = 1.0, max_tries: int = 10) -> list[CropBox]:
    """`count` random windows of `crop`² in an image of `height` × `width`.

    With `cat_max_ratio` < 1 and the image's class map, a window is re-drawn (at most `max_tries` draws in all,
    keeping the last) while one class covers `cat_max_ratio` or more of its labelled pixels."""
    def dominated(box):
        return is_dominated(cut(classes, box, IGNORE_LABEL), cat_max_ratio)

    test = dominated if classes is not None and cat_max_ratio < 1.0 else None
    return [random_crop(height, width, crop, seed, image_id, k, test, max_tries) for k in range(count)]


def tile_crops(height: int, width: int, crop: int) -> list[CropBox]:
    """Non-overlapping windows, row-major, that cover every pixel exactly once; the last row and column of
    windows run past the edge and are padded, so evaluation counts each source pixel once."""
    return [CropBox(y, x, crop, crop) for y in range(0, height, crop) for x in range(0, width, crop)]


def cut(array: np.ndarray, box: CropBox, pad_value: int) -> np.ndarray:
    """The window `box` of `array` ((H, W) or (H, W, C)), padded with `pad_value` where it runs past the edge.
    Always a new contiguous array."""
    height, width = array.shape[:2]
    if box.y < 0 or box.x < 0 or box.y >= height or box.x >= width:
        raise ValueError(f"Crop offset ({box.y}, {box.x}) is outside the {height}×{width} source.")
    part = array[box.y:box.y + box.height, box.x:box.x + box.width]
    if part.shape[:2] == (box.height, box.width):
        return np.ascontiguousarray(part)
    out = np.full((box.height, box.width) + array.shape[2:], pad_value, array.dtype)
    out[:part.shape[0], :part.shape[1]] = part
    return out
