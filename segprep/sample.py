"""The bundled sample dataset: a small, deterministic Pascal VOC-layout tree made on first use.

    python -m segprep.sample data/sample_voc      # (re)make it by hand; prepare makes it when it is missing

76 images (64 train, 12 val): three over 1,000 px, several smaller than 256 in one side, VOC-sized photos, a
quarter of the masks in palette mode (as real VOC ships them), and VOC's (224, 224, 192) border around every object.
Three object classes are told apart by shape *and* texture, with random colours, so no image colour equals a
mask colour and a model has to learn something:

    aeroplane  triangles with stripes     boat  ellipses with dots     person  rotated boxes with a checkerboard
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from segprep import codec, layout
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR

VERSION = "2"
CLASSES = {"aeroplane": 1, "boat": 4, "person": 15}
# (width, height) of each image; the first NUM_TRAIN are train, the rest val.
SIZES = [
    (1600, 1200), (1280, 1024), (500, 375), (375, 500), (480, 360), (500, 333), (400, 200), (180, 320),
    (500, 375), (333, 500), (640, 480), (500, 281), (256, 256), (500, 375), (300, 240), (512, 384),
    (500, 375), (375, 500), (460, 345), (500, 400), (220, 500), (500, 375), (420, 315), (500, 350),
] + [(500, 375), (375, 500), (500, 333), (640, 427), (480, 360), (500, 400), (450, 300), (333, 500)] * 5 + [
    (1100, 1000), (500, 375), (375, 500), (240, 300), (500, 333), (480, 360), (500, 375), (400, 300),
    (500, 375), (375, 500), (640, 480), (500, 333),
]
NUM_TRAIN = 64
SPLITS = ("train", "val")

def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour noise: random base colour, low-frequency blobs, pixel noise."""
    base = rng.uniform(40, 215, 3)
    low = rng.normal(0, 30, (max(2, h // 64), max(2, w // 64), 3)).astype(np.float32)
    low = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return base + low + rng.normal(0, 6, (h, w, 3))


def _texture(rng: np.random.Generator, cls: str, h: int, w: int) -> np.ndarray:
    """A two-colour texture that tells the class: stripes, dots or checkerboard."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    if cls == "aeroplane":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(7, 11)
        on = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
    elif cls == "boat":
        spacing = rng.uniform(9, 13)
        on = ((np.mod(xx, spacing) - spacing / 2) ** 2 + (np.mod(yy, spacing) - spacing / 2) ** 2) < 7
    else:
        size = rng.uniform(6, 9)
        on = (np.floor(xx / size) + np.floor(yy / size)) % 2 == 0
    return np.where(on[..., None], a, b)


def _shape(rng: np.random.Generator, cls: str, h: int, w: int) -> np.ndarray:
    """A filled object silhouette (0/1, uint8) of the class's shape, 40–160 px across."""
    out = np.zeros((h, w), np.uint8)
    size = rng.uniform(40, min(160, 0.8 * min(h, w) + 20))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    if cls == "aeroplane":
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.2, 4.1])
        pts = np.stack([cx + size / 2 * np.cos(angles), cy + size / 2 * np.sin(angles)], 1)
        cv2.fillPoly(out, [pts.round().astype(np.int32)], 1)
    elif cls == "boat":
        axes = (int(size / 2), int(size / 2 * rng.uniform(0.35, 0.6)))
        cv2.ellipse(out, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        box = ((float(cx), float(cy)), (float(size * 0.45), float(size)), float(rng.uniform(-30, 30)))
        cv2.fillPoly(out, [cv2.boxPoints(box).round().astype(np.int32)], 1)
    return out


def make_pair(index: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """→ (RGB image, class-index mask with 255 on object borders), deterministic in `index`."""
    rng = np.random.default_rng([2026, index])
    image = _background(rng, height, width)
    classes = np.zeros((height, width), np.uint8)
    num_objects = max(2, int(round(width * height / 40_000)))
    for _ in range(num_objects):
        cls = list(CLASSES)[int(rng.integers(len(CLASSES)))]
        obj = _shape(rng, cls, height, width).astype(bool)
        if not obj.any():
            continue
        ys, xs = np.nonzero(obj.any(1))[0], np.nonzero(obj.any(0))[0]
        box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        part = obj[box]
        tex = _texture(rng, cls, *part.shape)
        image[box][part] = tex[part] + rng.normal(0, 6, (int(part.sum()), 3))
        classes[box][part] = CLASSES[cls]
    # VOC-style border: a few pixels of "ignore" wherever two labels meet.
    kernel = np.ones((5, 5), np.uint8)
    edge = cv2.dilate(classes, kernel) != cv2.erode(classes, kernel)
    classes[edge] = IGNORE_LABEL
    return np.clip(image, 0, 255).astype(np.uint8), classes


def ensure_sample(root: str) -> str:
    """Make the sample tree under `root` unless a complete one of this version is there; → root."""
    marker = os.path.join(root, "SAMPLE_VERSION")
    if os.path.exists(marker) and open(marker).read().strip() == VERSION:
        return root
    for sub in (layout.IMAGE_DIR, layout.MASK_DIR, layout.SPLIT_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    colors = VOC.color_array()
    colors[IGNORE_LABEL] = VOC_BORDER_COLOR
    ids = []
    for i, (w, h) in enumerate(SIZES):
        image_id = f"2026_{i + 1:06d}"
        ids.append(image_id)
        image, classes = make_pair(i, w, h)
        with open(layout.image_path(root, image_id), "wb") as f:
            f.write(codec.encode_image(image, "jpeg", quality=90))
        if i % 4 == 3:  # palette-mode PNG, as real VOC
            mask = codec.encode_palette_png(classes, colors)
        else:  # RGB colour PNG
            mask = codec.encode_image(colors[classes], "png")
        with open(layout.mask_path(root, image_id), "wb") as f:
            f.write(mask)
    for split, part in zip(SPLITS, (ids[:NUM_TRAIN], ids[NUM_TRAIN:])):
        with open(layout.split_path(root, split), "w") as f:
            f.write("\n".join(part) + "\n")
    with open(marker, "w") as f:
        f.write(VERSION + "\n")
    return root


if __name__ == "__main__":
    print(ensure_sample(sys.argv[1] if len(sys.argv) > 1 else "data/sample_voc"))
