"""Crop windows: random crops for training, covering tiles for evaluation, and cutting them out with padding.

Randomness is drawn once per crop from a generator seeded by (seed, image id, crop number) and the same window is
then cut from image and mask alike, so the output does not depend on the runner, worker count or bundle order,
and asking for more crops keeps the earlier ones.

A window may run past the edge of an image smaller than the crop: the image is padded with 0 and the mask with
the ignore label 255; the window's offset is always a pixel inside the source.

Rare classes on purpose (`--oversample_fraction F`): a seeded draw decides, with probability F, that crop k is
centred on a pixel of one of the named classes the image holds (the class picked uniformly among them by a second
generator, seeded by (seed, image id, crop number)) instead of drawn at random. The pixels come from
`ClassPositions`, a uniform sample of each class's pixels taken from the converted class map, band by band; crops
that are not oversampled are exactly the windows they are without the flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator

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


def random_draws(height: int, width: int, crop: int, seed: int, image_id: str, k: int) -> Iterator[CropBox]:
    """Random window number `k`'s draws: the first is the window; the rest replace it while it is dominated."""
    rng = crop_rng(seed, image_id, k)
    while True:
        yield _draw(rng, height, width, crop)


def pick(draws: Iterable[CropBox], dominated: Callable[[CropBox], bool] | None = None,
         max_tries: int = 10) -> CropBox:
    """The first of `draws` that is not `dominated`, at most `max_tries` draws in all, keeping the last; the first
    draw without `dominated`."""
    draws = iter(draws)
    box = next(draws)
    if dominated is not None:
        for _ in range(max_tries - 1):
            if not dominated(box):
                break
            following = next(draws, None)
            if following is None:  # a finite list of draws, used up: the last is kept
                break
            box = following
    return box


def random_crop(height: int, width: int, crop: int, seed: int, image_id: str, k: int,
                dominated=None, max_tries: int = 10) -> CropBox:
    """Random window number `k` of `crop`² in an image of `height` × `width`. With `dominated` (a function of a
    window: True when one class dominates it), the window is re-drawn from the same generator while it is
    dominated, at most `max_tries` draws in all, keeping the last."""
    return pick(random_draws(height, width, crop, seed, image_id, k), dominated, max_tries)


# --- rare classes on purpose -------------------------------------------------------------------------------------

MIN_POSITIONS = 256  # pixel positions kept a class at least; more when an image gets more oversampled crops
_BAND_PIXELS = 1 << 20  # positions are gathered a band of rows of about this many pixels at a time


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array, in place: a fast, well-spread 64-bit hash of each value."""
    z += np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def position_limit(fraction: float, count: int) -> int:
    """Positions kept a class for an image of `count` random crops, `fraction` of them oversampled: enough that
    the crops centred on one class take distinct pixels."""
    return max(MIN_POSITIONS, math.ceil(fraction * count))


class ClassPositions:
    """Up to `limit` pixel positions of each named class of one image: those whose hash of (seed, id, position)
    is smallest, a uniform sample without replacement in a random order. The sample depends only on the pixels,
    not on the order or the parts the mask is seen in, so a giant tile's windows (each adding its own cell) and the
    whole mask give the same positions, which `merge` combines."""

    def __init__(self, seed: int, image_id: str, width: int, classes: Iterable[int], limit: int = MIN_POSITIONS):
        self.width, self.limit = width, limit
        self._salt = np.uint64(stable_hash("positions", seed, image_id))
        self._named = np.zeros(256, bool)
        self._named[list(classes)] = True
        self._named[IGNORE_LABEL] = False
        self._kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # class → (hashes uint64, positions int64)
        self._bound = np.full(256, np.iinfo(np.uint64).max, np.uint64)  # a full class's largest kept hash

    def add(self, classes: np.ndarray, y0: int = 0, x0: int = 0) -> ClassPositions:
        """Adds the pixels of a part of the image's class map whose top-left pixel is (`y0`, `x0`)."""
        height, width = classes.shape
        rows = max(1, _BAND_PIXELS // max(width, 1))
        for r0 in range(0, height, rows):
            band = classes[r0:r0 + rows]
            flat = np.flatnonzero(np.take(self._named, band))
            if not flat.size:
                continue
            labels = band.ravel()[flat]
            starts = np.arange(y0 + r0, y0 + r0 + band.shape[0], dtype=np.int64) * self.width
            positions = np.add.outer(starts, np.arange(x0, x0 + width, dtype=np.int64)).ravel()[flat]  # y × W + x
            hashes = _mix(positions.astype(np.uint64) ^ self._salt)
            chance = hashes <= np.take(self._bound, labels)  # could still be among its class's smallest
            labels, hashes, positions = labels[chance], hashes[chance], positions[chance]
            for c in np.flatnonzero(np.bincount(labels, minlength=256)):
                held = labels == c
                self._keep(int(c), hashes[held], positions[held])
        return self

    def merge(self, other: ClassPositions) -> ClassPositions:
        for c, (hashes, positions) in other._kept.items():
            self._keep(c, hashes, positions)
        return self

    def _keep(self, c: int, hashes: np.ndarray, positions: np.ndarray) -> None:
        if c in self._kept:
            hashes = np.concatenate([self._kept[c][0], hashes])
            positions = np.concatenate([self._kept[c][1], positions])
        if hashes.size > self.limit:
            cut = np.partition(hashes, self.limit - 1)[self.limit - 1]
            keep = hashes <= cut  # the `limit` smallest: `_mix` is a bijection, so distinct pixels never tie
            hashes, positions = hashes[keep], positions[keep]
            self._bound[c] = cut
        self._kept[c] = hashes, positions

    @property
    def present(self) -> list[int]:
        """The named classes with at least one pixel, ascending."""
        return sorted(c for c, (h, _) in self._kept.items() if h.size)

    def ordered(self, c: int) -> np.ndarray:
        """Class `c`'s kept positions (y × width + x) in the order picks take them: by hash, then position."""
        hashes, positions = self._kept[c]
        return positions[np.lexsort((positions, hashes))]


def oversample_rng(seed: int, image_id: str, k: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_hash("oversample", image_id), k])


_GOLDEN = 0.6180339887498949  # 1/φ: k × it mod 1 spreads any run of consecutive k evenly over [0, 1)


def is_oversampled(seed: int, image_id: str, k: int, fraction: float) -> bool:
    """Whether random crop `k` is one to centre on a named class (when the image holds one): with probability
    `fraction`, spread evenly over an image's crops (a golden-ratio sequence from a start seeded by (seed, id)), so
    an image of n crops has within about one of fraction × n, not the binomial spread of coin flips (for 100 crops
    at 0.33: 32–34 in each of 200 images, where coin flips typically give 21–46)."""
    if fraction <= 0:
        return False
    start = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash("oversample start", image_id)]).random()
    return (start + k * _GOLDEN) % 1.0 < fraction


class CropDraws:
    """The draws of an image's random crops, oversampled ones included: `draws(k)` for each crop k in ascending
    order (oversampled crops take their class's positions in turn, so they centre on distinct pixels)."""

    def __init__(self, height: int, width: int, crop: int, seed: int, image_id: str, fraction: float = 0.0,
                 positions: ClassPositions | None = None):
        self.height, self.width, self.crop, self.seed, self.image_id = height, width, crop, seed, image_id
        self.fraction = fraction
        self._present = positions.present if positions is not None else []
        self._ordered = {c: positions.ordered(c) for c in self._present}
        self._turns = dict.fromkeys(self._present, 0)

    def draws(self, k: int) -> Iterator[CropBox]:
        if self._present and is_oversampled(self.seed, self.image_id, k, self.fraction):
            return self._centred(oversample_rng(self.seed, self.image_id, k))
        return random_draws(self.height, self.width, self.crop, self.seed, self.image_id, k)

    def _centred(self, rng: np.random.Generator) -> Iterator[CropBox]:
        present = self._present
        c = present[int(rng.integers(len(present)))]
        turn = self._turns[c]  # taken now, not when the draws are read: crops take turns in the order k
        self._turns[c] += 1
        ordered = self._ordered[c]

        def redraws():  # --cat_max_ratio: any named class present, any kept pixel of it
            while True:
                kept = self._ordered[present[int(rng.integers(len(present)))]]
                yield self._around(int(kept[int(rng.integers(len(kept)))]))

        return itertools.chain([self._around(int(ordered[turn % len(ordered)]))], redraws())

    def _around(self, position: int) -> CropBox:
        """The crop centred on pixel `position`, moved inside the image."""
        y, x = divmod(position, self.width)
        half = self.crop // 2
        return CropBox(min(max(y - half, 0), max(self.height - self.crop, 0)),
                       min(max(x - half, 0), max(self.width - self.crop, 0)), self.crop, self.crop)


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
