"""Spatial splits inside an image: `--val_fraction F --split_by blocks:SIZE`.

Neighbouring windows of one scene are strongly correlated, so a 40,000² scene must not be all-train or all-val. With
blocks, every image is cut into SIZE² blocks (row-major, the last row and column clipped to the image); of the
blocks that hold data (any pixel that is not the image's nodata value; every block when it declares none),
round(F × their number), ranked by a hash of (seed, id, block), are the image's val blocks. Training crops are drawn
only where they overlap no val block (a crop never straddles the border); the val split's tiles are the tiles of
each val block (SIZE is a multiple of the crop size, so they never leave it). A function of (seed, id, SIZE, F)
and the image alone: the same on every runner and worker count, whole or window by window.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from segprep.crops import CropBox, stable_hash

MAX_DRAWS = 1000  # random draws tried for a training crop that overlaps no val block, before it is given up


@dataclasses.dataclass(frozen=True)
class Blocks:
    """One image's blocks: their size, grid and which are val."""

    size: int
    height: int
    width: int
    val: frozenset[int]

    @property
    def columns(self) -> int:
        return math.ceil(self.width / self.size)

    @property
    def count(self) -> int:
        return math.ceil(self.height / self.size) * self.columns

    def box(self, b: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of block `b`, clipped to the image."""
        y, x = b // self.columns * self.size, b % self.columns * self.size
        return y, min(y + self.size, self.height), x, min(x + self.size, self.width)

    def touches_val(self, box: CropBox) -> bool:
        """Whether a window overlaps a val block (its part inside the image)."""
        y1, x1 = min(box.y + box.height, self.height), min(box.x + box.width, self.width)
        for row in range(box.y // self.size, (y1 - 1) // self.size + 1):
            for col in range(box.x // self.size, (x1 - 1) // self.size + 1):
                if row * self.columns + col in self.val:
                    return True
        return False

    def tiles(self, crop: int) -> list[CropBox]:
        """The val split's tiles: each val block's, in block order, row-major inside it."""
        out = []
        for b in sorted(self.val):
            y0, y1, x0, x1 = self.box(b)
            out += [CropBox(y, x, crop, crop) for y in range(y0, y1, crop) for x in range(x0, x1, crop)]
        return out


def parse(text: str) -> int | None:
    """--split_by: "id" → None; "blocks:SIZE" → SIZE; a ValueError saying what is wrong otherwise."""
    if text == "id":
        return None
    kind, _, size = text.partition(":")
    if kind != "blocks" or not size.isdigit() or int(size) < 1:
        raise ValueError(f"--split_by {text!r}: give id (whole images) or blocks:SIZE (e.g. blocks:512)")
    return int(size)


def choose(image_id: str, height: int, width: int, size: int, fraction: float, seed: int,
           present: set[int] | None = None) -> Blocks:
    """The image's blocks and its val blocks: round(fraction × the blocks holding data, `present`, or all)."""
    grid = Blocks(size, height, width, frozenset())
    holding = sorted(present) if present is not None else list(range(grid.count))
    order = sorted(holding, key=lambda b: (stable_hash(seed, "block", image_id, b), b))
    return dataclasses.replace(grid, val=frozenset(order[:round(fraction * len(holding))]))


def present_blocks(empty: np.ndarray, origin: tuple[int, int], size: int, width: int) -> set[int]:
    """The blocks holding data among those a region touches: `empty` its no-data pixels, from `origin` (y, x)."""
    columns = math.ceil(width / size)
    found = set()
    y0, x0 = origin
    h, w = empty.shape
    for row in range(y0 // size, (y0 + h - 1) // size + 1):
        for col in range(x0 // size, (x0 + w - 1) // size + 1):
            part = empty[max(row * size - y0, 0):(row + 1) * size - y0, max(col * size - x0, 0):(col + 1) * size - x0]
            if part.size and not part.all():
                found.add(row * columns + col)
    return found


def allowed_draws(draws, blocks: Blocks):
    """The draws of a training crop that overlap no val block, at most MAX_DRAWS tried."""
    for n, box in enumerate(draws):
        if n >= MAX_DRAWS:
            return
        if not blocks.touches_val(box):
            yield box


def training_draws(blocks: Blocks, crop: int, seed: int, image_id: str, k: int, tries: int) -> tuple[CropBox, ...]:
    """Training crop `k`'s first `tries` draws clear of the val blocks (none when there are none): what
    `crops.pick` chooses from, on the whole-image and the windowed path alike."""
    from segprep.crops import random_draws

    draws = random_draws(blocks.height, blocks.width, crop, seed, image_id, k)
    return tuple(itertools.islice(allowed_draws(draws, blocks), tries))
