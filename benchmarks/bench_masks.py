"""(g) Restoring JPEG-damaged colour masks with `--unknown_colors=nearest`, side by side with the rule it replaced
(each pixel to the nearest palette colour within the tolerance, the whole image rejected when a pixel is beyond it)
and with the same rule at any distance.

Masks: 60 VOC-like class maps (375 × 500, 1-4 objects of any of the 20 classes, VOC's 5 px border) and 3 big ones
(2,000², 60 objects), each through JPEG once (OpenCV, 4:2:0) at quality 75, 85 and 95. Reported per quality:
images written, pixels equal to the mask before JPEG (over the written images), classes that appear in the
output but not in the mask, and the time per megapixel.
"""

import time

import numpy as np

from segprep import lookup
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR
from tests.masks import jpeg_damaged, voc_like_mask


def mask_colors():
    colors = VOC.color_array()
    colors[IGNORE_LABEL] = VOC_BORDER_COLOR
    return colors


def per_pixel_rule(rgb):
    """The former rule: nearest palette colour within the tolerance, per pixel; None when any pixel is beyond."""
    _, values = lookup._entries(VOC)
    entry = np.take(lookup.build_entry_table(VOC, lookup.DEFAULT_TOLERANCE), lookup.color_keys(rgb))
    if (entry == lookup.FAR).any():
        return None
    return values[entry]


def any_distance_rule(rgb):
    """Each pixel to the nearest palette colour at any distance: writes every image, but ringing between two
    colours becomes the class whose colour lies between them."""
    colors, values = lookup._entries(VOC)
    px = rgb.reshape(-1, 3).astype(np.int32)
    best = np.zeros(len(px), np.int64)
    best_d2 = np.full(len(px), 1 << 30)
    for j, c in enumerate(colors):
        d2 = ((px - c) ** 2).sum(1)
        closer = d2 < best_d2
        best[closer], best_d2[closer] = j, d2[closer]
    return values[best].reshape(rgb.shape[:2])


def present_rule(rgb):
    return lookup.convert_mask(rgb, VOC, "nearest").classes


def score(rule, pairs):
    written = agree = total = invented = 0
    seconds = 0.0
    for truth, damaged in pairs:
        t = time.perf_counter()
        got = rule(damaged)
        seconds += time.perf_counter() - t
        if got is None:
            continue
        written += 1
        agree += int((got == truth).sum())
        total += truth.size
        invented += len(set(np.unique(got).tolist()) - set(np.unique(truth).tolist()))
    pixels = sum(t.size for t, _ in pairs)
    return written, agree / max(total, 1), invented, seconds / pixels * 1e6


def main():
    truths = [voc_like_mask(i) for i in range(60)] + [voc_like_mask(i, 2000, 2000, 60) for i in range(3)]
    lookup.build_entry_table(VOC, lookup.DEFAULT_TOLERANCE)
    print(f"(g) JPEG-damaged VOC-coloured masks, {len(truths)} masks ({sum(t.size for t in truths) / 1e6:.0f} Mpx) "
          "per quality; goal: every image written, ≥ 99.9 % of pixels, no invented class")
    for quality in (75, 85, 95):
        pairs = [(t, jpeg_damaged(mask_colors()[t], quality)) for t in truths]
        for name, rule in (("per-pixel nearest (before)", per_pixel_rule),
                           ("per-pixel, any distance", any_distance_rule), ("nearest present (now)", present_rule)):
            written, agreement, invented, us = score(rule, pairs)
            print(f"    q{quality} {name:27s} {written:3d}/{len(pairs)} written  {100 * agreement:8.4f} % pixels  "
                  f"{invented:3d} invented classes  {us * 1e3:5.1f} ms/Mpx")


if __name__ == "__main__":
    main()
