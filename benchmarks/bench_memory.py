"""(c) Peak resident memory of `python -m pipelines.prepare` on one 10,000 × 10,000 JPEG + colour mask with auto
crops (~1,526 crops), interpreter and Beam included, in three cases side by side:

  - a good mask (VOC colours, default --unknown_colors=error);
  - the same mask under the wrong --palette: every pixel off the palette, so the run takes the error path
    (counting and naming the off-palette colours) and writes an error record;
  - the mask after one trip through JPEG (quality 90) with --unknown_colors=nearest: the restoring path.

Goal: ≤ 2 GB in every case.

(k) Peak resident memory against the dataset's size: 2, 16 and 64 tiles of 3000 × 4000 (auto crops, ~350 MB of shards
for 64), on the default path (crops spilled to local files, one shard written at a time) and with --shuffle beam
(Beam's GroupByKey, which the DirectRunner holds in memory), 1 worker. Goal: from 2 to 64 tiles peak RSS grows by
at most a quarter of the output's growth; flat is the aim.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from benchmarks.bench_prepare import write_tree
from segprep import layout
from segprep.formats.shards import is_shard
from segprep.palette import VOC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 10_000


# getrusage's ru_maxrss survives fork and exec, so a child would report this process's own peak from making the
# tile. VmHWM belongs to the child's address space alone: the child reports it as it exits.
_WRAPPER = """
import atexit, runpy, sys
atexit.register(lambda: print("VmHWM:", open("/proc/self/status").read().split("VmHWM:")[1].split()[0],
                              file=sys.stderr))
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def peak_rss(module: str, *args: str, ok=(0,)):
    """Runs `python -m module args` in a fresh process; → (seconds, peak RSS in MiB, stdout)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, module, *args], env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode not in ok:
        sys.exit(proc.stderr[-3000:])
    return secs, int(proc.stderr.split("VmHWM:")[1].split()[0]) / 1024, proc.stdout  # kB → MiB


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
    return bgr


def run_case(root, out, *flags):
    """→ (seconds, peak RSS in MiB, crops written) of one prepare run in a fresh process."""
    secs, peak, stdout = peak_rss("pipelines.prepare", "--input_dir", root, "--output_dir", out,
                                  "--runner=DirectRunner", *flags, ok=(0, 1))
    return secs, peak, stdout.split(" crops in ")[0].rsplit(" ", 1)[-1]


def main():
    main_tile()
    main_scale()


SCALE_H, SCALE_W, SCALE_DISTINCT = 3000, 4000, 4


def make_scale_tree(root, count):
    """`count` ids over SCALE_DISTINCT generated tiles (crops differ per id: their windows are drawn per id)."""
    rng = np.random.default_rng(1)
    colors = np.asarray(VOC.colors, np.uint8)[:, ::-1]
    tiles = []
    for _ in range(SCALE_DISTINCT):
        image = cv2.resize(rng.uniform(0, 255, (30, 40, 3)).astype(np.float32), (SCALE_W, SCALE_H))
        image = np.clip(image + rng.normal(0, 8, (SCALE_H, SCALE_W, 3)), 0, 255).astype(np.uint8)
        blocks = rng.integers(0, 6, (SCALE_H // 40, SCALE_W // 40)).astype(np.uint8)
        classes = cv2.resize(blocks, (SCALE_W, SCALE_H), interpolation=cv2.INTER_NEAREST)
        tiles.append((cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
                      cv2.imencode(".png", colors[classes])[1].tobytes()))
    write_tree(root, tiles, [f"tile{i:03d}" for i in range(count)])


def output_bytes(out):
    return sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if is_shard(n))


def main_scale():
    counts = (2, 16, 64)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            root = os.path.join(tmp, f"voc{count}")
            make_scale_tree(root, count)
            for path, flags in (("spill (default)", ()), ("--shuffle beam", ("--shuffle", "beam"))):
                out = os.path.join(tmp, f"out{count}{len(flags)}")
                secs, peak, crops = run_case(root, out, *flags)
                rows[path, count] = secs, peak, crops, output_bytes(out) / 2**20
    print(f"(k) prepare on 2, 16 and 64 tiles of {SCALE_H}×{SCALE_W}, auto crops, 1 worker; goal: peak RSS grows by ≤ ¼ "
          "of the output's growth:")
    for (path, count), (secs, peak, crops, size) in sorted(rows.items()):
        print(f"    {path:16s} {count:3d} tiles  peak RSS {peak:6,.0f} MiB  output {size:6,.0f} MiB  {crops:>6s} crops  "
              f"{secs:5.1f} s")
    for path in ("spill (default)", "--shuffle beam"):
        (_, small, _, out_small), (_, big, _, out_big) = rows[path, counts[0]], rows[path, counts[-1]]
        print(f"    {path}: peak RSS +{big - small:,.0f} MiB for +{out_big - out_small:,.0f} MiB of output "
              f"({(big - small) / (out_big - out_small):.2f} MiB per MiB; goal ≤ 0.25)")


def main_tile():
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "voc")
        bgr = make_tile(root)
        sizes = [os.path.getsize(layout.image_path(root, "tile")), os.path.getsize(layout.mask_path(root, "tile"))]
        palette = os.path.join(tmp, "potsdam.json")
        with open(palette, "w") as f:  # no VOC colour in it: every mask pixel is off this palette
            json.dump({"names": ["impervious", "building", "low_vegetation", "tree", "car", "clutter"],
                       "colors": [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0],
                                  [255, 0, 0]]}, f)
        lossy_root = os.path.join(tmp, "lossy")
        shutil.copytree(root, lossy_root)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(layout.mask_path(lossy_root, "tile"), cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
        del bgr, jpeg
        cases = [("good mask", root, ()),
                 ("off-palette mask (error path)", root, ("--palette", palette)),
                 ("JPEG-damaged mask, nearest", lossy_root, ("--unknown_colors", "nearest"))]
        results = [(name, *run_case(r, os.path.join(tmp, f"out{i}"), *flags))
                   for i, (name, r, flags) in enumerate(cases)]
    print(f"(c) one {SIDE:,}² tile (JPEG {sizes[0] >> 20} MiB, mask PNG {sizes[1] >> 20} MiB), auto crops; the "
          f"decoded image alone is {SIDE * SIDE * 3 >> 20} MiB; goal ≤ 2,048 MiB peak RSS in each case:")
    for name, secs, peak, crops in results:
        print(f"    {name:32s} peak RSS {peak:6,.0f} MiB  {secs:5.1f} s  {crops:>5s} crops")
    good = results[0][2]
    print(f"    error path / good = {results[1][2] / good:.2f}×, nearest / good = {results[2][2] / good:.2f}×")


if __name__ == "__main__":
    main()
