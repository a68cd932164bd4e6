"""(p) Rare classes on purpose: --oversample_fraction 0 vs 0.33 on a dataset where one class covers ~0.2% of the
pixels in small objects: the share of training crops holding it, and its val IoU after the default training.

    ./dev bench oversample      # about 45 minutes on 2 cores: two prepare runs, two default trainings

The scenes are synthetic and learnable: a textured background (class 0), large blobs of "person" (15) and a few
small "car" (7) rectangles, each class with its own colour under noise, so what differs between the two columns is
only how often training crops show a car.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from segprep import codec, layout

BACKGROUND, BLOB, RARE = 0, 15, 7  # VOC's background, person, car
RARE_NAME = "car"


def rare_scene(rng: np.random.Generator, height: int, width: int, objects: int, size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """→ (RGB image, class map): blobs of BLOB over a textured background and `objects` small RARE rectangles
    of about `size` px a side."""
    classes = np.full((height, width), BACKGROUND, np.uint8)
    for _ in range(3):
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        cv2.ellipse(classes, (cx, cy), (int(rng.integers(width // 10, width // 4)),
                                        int(rng.integers(height // 10, height // 4))),
                    float(rng.integers(180)), 0, 360, BLOB, -1)
    for _ in range(objects):
        h, w = int(rng.integers(size * 3 // 4, size * 5 // 4 + 1)), int(rng.integers(size * 3 // 4, size * 5 // 4 + 1))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        classes[y:y + h, x:x + w] = RARE
    colours = np.zeros((256, 3), np.float32)
    colours[BACKGROUND], colours[BLOB], colours[RARE] = (70, 110, 60), (150, 150, 160), (200, 40, 40)
    texture = cv2.GaussianBlur(rng.normal(0, 40, (height, width, 3)).astype(np.float32), (0, 0), 3)
    image = np.clip(colours[classes] + texture + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    return image, classes


def make_rare_tree(root: str, train: int, val: int, height: int, width: int, objects: int, size: int,
                   seed: int = 0) -> dict[str, list[str]]:
    """A VOC-layout tree of rare-class scenes (JPEG images, index PNG masks) → {split: ids}."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, layout.IMAGE_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, layout.MASK_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, layout.SPLIT_DIR), exist_ok=True)
    splits = {"train": [f"t{i:04d}" for i in range(train)], "val": [f"v{i:04d}" for i in range(val)]}
    for split, ids in splits.items():
        for image_id in ids:
            image, classes = rare_scene(rng, height, width, objects, size)
            with open(layout.image_path(root, image_id), "wb") as f:
                f.write(codec.encode_image(image, "jpeg", quality=95))
            with open(layout.mask_path(root, image_id), "wb") as f:
                f.write(codec.encode_index_png(classes))
        with open(layout.split_path(root, split), "w") as f:
            f.write("\n".join(ids) + "\n")
    return splits


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "voc")
        make_rare_tree(root, train=16, val=4, height=1024, width=1024, objects=2, size=32)
        rows = {}
        for fraction in ("0", "0.33"):
            out, run_dir = os.path.join(tmp, f"records{fraction}"), os.path.join(tmp, f"run{fraction}")
            prepare_s = _run(["-m", "pipelines.prepare", "--input_dir", root, "--output_dir", out,
                              "--oversample_fraction", fraction, "--oversample_classes", RARE_NAME,
                              "--runner=DirectRunner"])
            meta = json.load(open(os.path.join(out, "metadata.json")))
            split = meta["splits"]["train"]
            share = split["class_crops"][RARE] / split["records"]
            if fraction == "0":
                rare_share = split["class_pixels"][RARE] / sum(split["class_pixels"])
            train_s = _run(["-m", "trainer.train", "--data_dir", out, "--model_dir", run_dir])
            subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", run_dir, "--data_dir", out],
                           check=True, stdout=subprocess.DEVNULL)
            result = json.load(open(os.path.join(run_dir, "eval-val.json")))
            iou = result["per_class"].get(RARE_NAME, {}).get("iou") or 0.0
            rows[fraction] = (split["records"], share, iou, result["miou"], prepare_s, train_s)
        print(f"\n(p) oversampling: 16 train + 4 val scenes of 1024², '{RARE_NAME}' {rare_share:.2%} of the pixels "
              "(of the plain random crops), in two rectangles of about 32² an image")
        print(f"{'--oversample_fraction':>22} {'crops':>6} {'crops with ' + RARE_NAME:>15} "
              f"{'val IoU ' + RARE_NAME:>12} {'val mIoU':>9} {'prepare s':>10} {'train s':>8}")
        for fraction, (records, share, iou, miou, prepare_s, train_s) in rows.items():
            print(f"{fraction:>22} {records:>6} {share:>15.1%} {iou:>12.3f} {miou:>9.3f} {prepare_s:>10.1f} "
                  f"{train_s:>8.1f}")


if __name__ == "__main__":
    main()
