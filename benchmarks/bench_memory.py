"""(c) Peak resident memory of `python -m pipelines.prepare` on one 10,000 × 10,000 JPEG + colour mask with auto
crops (~1,526 crops), interpreter and Beam included. Goal: ≤ 2 GB.
"""

import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from segprep import layout
from segprep.palette import VOC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 10_000


# getrusage's ru_maxrss survives fork and exec, so a child would report this process's own peak from making the
# tile. VmHWM belongs to the child's address space alone: the child reports it as it exits.
_WRAPPER = """
import atexit, runpy, sys
atexit.register(lambda: print("VmHWM:", open("/proc/self/status").read().split("VmHWM:")[1].split()[0],
                              file=sys.stderr))
sys.argv[0] = "pipelines.prepare"
runpy.run_module("pipelines.prepare", run_name="__main__", alter_sys=True)
"""


def make_tile(root):
    for sub in (layout.IMAGE_DIR, layout.MASK_DIR, layout.SPLIT_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    # Smooth colour field plus noise, and a mask of 50 px blocks of 5 classes: like a land-cover tile.
    image = cv2.resize(rng.uniform(0, 255, (100, 100, 3)).astype(np.float32), (SIDE, SIDE))
    image = np.clip(image + rng.normal(0, 8, (SIDE, 1, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(layout.image_path(root, "tile"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del image
    blocks = rng.integers(0, 5, (SIDE // 50, SIDE // 50)).astype(np.uint8)
    classes = cv2.resize(blocks, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
    bgr = np.asarray(VOC.colors, np.uint8)[:, ::-1][classes]
    cv2.imwrite(layout.mask_path(root, "tile"), bgr)
    with open(layout.split_path(root, "train"), "w") as f:
        f.write("tile\n")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "voc")
        make_tile(root)
        sizes = [os.path.getsize(layout.image_path(root, "tile")), os.path.getsize(layout.mask_path(root, "tile"))]
        env = dict(os.environ, PYTHONPATH=REPO)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, "--input_dir", root, "--output_dir",
                               os.path.join(tmp, "out"), "--runner=DirectRunner"], check=True, env=env,
                              capture_output=True, text=True)
        secs = time.perf_counter() - t
    out = proc.stdout
    peak = int(proc.stderr.split("VmHWM:")[1].split()[0]) / 1024  # kB → MiB
    crops = out.split(" crops in ")[0].rsplit(" ", 1)[-1]
    print(f"(c) one {SIDE:,}² tile (JPEG {sizes[0] >> 20} MiB, mask PNG {sizes[1] >> 20} MiB), auto crops: "
          f"{crops} crops in {secs:.1f} s, peak RSS {peak:,.0f} MiB (goal ≤ 2,048 MiB; the decoded image alone is "
          f"{SIDE * SIDE * 3 >> 20} MiB)")


if __name__ == "__main__":
    main()
