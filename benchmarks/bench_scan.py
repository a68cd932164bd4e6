"""(j) `python -m segprep.scan` on 1,000 VOC-sized colour masks (500 × 375, VOC colours and border): wall time with
one worker and with every core (joblib), side by side.
"""

import os
import subprocess
import sys
import tempfile
import time

import cv2

from segprep import layout
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR
from tests.masks import voc_like_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = 1000


def make_tree(root):
    for sub in (layout.MASK_DIR, layout.SPLIT_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    colors = VOC.color_array()
    colors[IGNORE_LABEL] = VOC_BORDER_COLOR
    ids = [f"m{i:05d}" for i in range(COUNT)]
    for i, image_id in enumerate(ids):
        cv2.imwrite(layout.mask_path(root, image_id), colors[voc_like_mask(i)][..., ::-1])
    with open(layout.split_path(root, "train"), "w") as f:
        f.write("\n".join(ids) + "\n")


def timed(root, jobs):
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segprep.scan", "--input_dir", root, "--jobs", str(jobs)], check=True,
                   env=env, capture_output=True)
    return time.perf_counter() - t


def main():
    with tempfile.TemporaryDirectory() as tmp:
        make_tree(tmp)
        one, every = timed(tmp, 1), timed(tmp, -1)
    print(f"(j) scan of {COUNT:,} masks of 500×375: {one:.1f} s with 1 worker, {every:.1f} s with {os.cpu_count()} "
          f"(→ {one / every:.2f}×), Python start-up included; {COUNT / every:.0f} masks/s")


if __name__ == "__main__":
    main()
