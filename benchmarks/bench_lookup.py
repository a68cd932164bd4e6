"""(a) Colour mask → class indices on a 4096² RGB mask: segprep's lookup vs the seed recipe's.

The seed recipe: `colormap2label = np.zeros(256 ** 3)` (float64) indexed by the int32 key `(r*256+g)*256+b`,
table prebuilt (not timed), same index output. Goal: ≥ 5×.
"""

import time

import numpy as np

from segprep import lookup
from segprep.palette import VOC


def seed_recipe_table():
    colormap2label = np.zeros(256 ** 3)
    for i, colormap in enumerate(VOC.colors):
        colormap2label[(colormap[0] * 256 + colormap[1]) * 256 + colormap[2]] = i
    return colormap2label


def seed_recipe(mask, colormap2label):
    mask = mask.astype("int32")
    idx = (mask[:, :, 0] * 256 + mask[:, :, 1]) * 256 + mask[:, :, 2]
    return colormap2label[idx]


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(size=4096):
    rng = np.random.default_rng(0)
    # Blocky masks like real ones: 64² blocks of the 21 class colours.
    blocks = rng.integers(0, 21, (size // 64, size // 64))
    idx = np.kron(blocks, np.ones((64, 64), np.int64))
    mask = np.asarray(VOC.colors, np.uint8)[idx]
    table = seed_recipe_table()
    lookup.build_table(VOC)  # both tables prebuilt
    t_seed, seed_out = best_of(lambda: seed_recipe(mask, table))
    t_ours, ours = best_of(lambda: lookup.convert_mask(mask, VOC).classes)
    assert np.array_equal(seed_out.astype(np.uint8), ours) and np.array_equal(ours, idx)
    print(f"(a) lookup {size}² RGB mask: seed recipe {t_seed * 1e3:.0f} ms, segprep {t_ours * 1e3:.0f} ms "
          f"→ {t_seed / t_ours:.1f}× faster (goal ≥ 5×); same index output; "
          f"memory: seed table {table.nbytes >> 20} MiB float64, ours 16 MiB uint8")


if __name__ == "__main__":
    main()
