"""(h) Peak resident memory and time of `python -m trainer.predict` on one 10,000 × 10,000 JPEG, TensorFlow and
the default model (untrained: memory and time do not depend on the weights) included. Goal: ≤ 2 GB.
"""

import json
import os
import tempfile

import cv2
import numpy as np

from benchmarks.bench_memory import SIDE, peak_rss


def make_run(run):
    """A run dir as trainer.train leaves it: model.keras and segprep.json."""
    from segprep.palette import VOC
    from trainer import saving
    from trainer.model import build_model

    os.makedirs(run)
    saving.save_inference_model(build_model(21, 256, mean=[120.0] * 3, std=[60.0] * 3), f"{run}/model.keras")
    with open(f"{run}/segprep.json", "w") as f:
        json.dump({"class_names": list(VOC.names), "class_colors": [list(c) for c in VOC.colors],
                   "ignore_colors": [list(c) for c in VOC.ignore_colors], "num_classes": 21, "crop_size": 256,
                   "normalization": {"stats": "dataset", "in_model": True, "mean": [120.0] * 3, "std": [60.0] * 3}},
                  f)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run, image = os.path.join(tmp, "run"), os.path.join(tmp, "tile.jpg")
        make_run(run)
        rng = np.random.default_rng(0)
        tile = cv2.resize(rng.uniform(0, 255, (100, 100, 3)).astype(np.float32), (SIDE, SIDE)).astype(np.uint8)
        cv2.imwrite(image, tile, [cv2.IMWRITE_JPEG_QUALITY, 90])
        del tile
        secs, peak, _ = peak_rss("trainer.predict", "--model_dir", run, "--input", image, "--output_dir",
                                 os.path.join(tmp, "preds"))
    print(f"(h) predict on one {SIDE:,}² JPEG (windows of 256², overlap 0.25, default model): peak RSS "
          f"{peak:,.0f} MiB (goal ≤ 2,048 MiB) in {secs:.0f} s ({SIDE * SIDE / 1e6 / secs:.2f} Mpx/s)")


if __name__ == "__main__":
    main()
