"""Masks as real datasets hold them, for the tests and benchmarks: VOC-like class maps with VOC's ignore border, and
colour masks after one trip through JPEG."""

from __future__ import annotations

import cv2
import numpy as np

from segprep import codec
from segprep.palette import IGNORE_LABEL


def jpeg_damaged(rgb: np.ndarray, quality: int) -> np.ndarray:
    """`rgb` after one trip through JPEG at `quality` (4:2:0, libjpeg through OpenCV), as many datasets' colour masks
    went before they were saved back as PNG."""
    return codec.decode_image(codec.encode_image(rgb, "jpeg", quality))


def voc_like_mask(index: int, h: int = 375, w: int = 500, objects: int | None = None) -> np.ndarray:
    """A VOC-like class map: 1-4 objects (ellipses, polygons, boxes) of any of the 20 classes on background, with
    VOC's 5 px ignore border. Many VOC colours lie halfway between two others (cat (64,0,0) between background and
    aeroplane), which is what makes JPEG-damaged masks hard to restore."""
    rng = np.random.default_rng([7, index])
    m = np.zeros((h, w), np.uint8)
    for _ in range(objects or int(rng.integers(1, 5))):
        obj = np.zeros((h, w), np.uint8)
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 200)
        kind = rng.integers(3)
        if kind == 0:
            cv2.ellipse(obj, (int(cx), int(cy)), (int(s / 2), int(s / 3)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif kind == 1:
            angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
            radii = s / 2 * rng.uniform(0.4, 1, 7)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round().astype(np.int32)
            cv2.fillPoly(obj, [pts], 1)
        else:
            cv2.rectangle(obj, (int(cx), int(cy)), (int(cx + s), int(cy + s * 0.6)), 1, -1)
        m[obj.astype(bool)] = int(rng.integers(1, 21))
    kernel = np.ones((5, 5), np.uint8)
    m[cv2.dilate(m, kernel) != cv2.erode(m, kernel)] = IGNORE_LABEL
    return m
