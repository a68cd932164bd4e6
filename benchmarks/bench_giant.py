"""(o) Giant tiles: peak RSS and source Mpx/s of `python -m pipelines.prepare` on one tiled TIFF pair (RGB image,
JPEG-compressed 512² tiles at quality 90, and its class-id mask, deflate) of 10,000², 20,000² and 40,000² px, read
window by window, beside one 10,000² JPEG + PNG pair decoded whole; each on 1 worker and on 2
(--direct_num_workers=2 --direct_running_mode=multi_processing), auto crops (one pass over the area: 24,415 crops
of 256² for 40,000²), side by side in one run.

The TIFFs are written tile by tile from functions of (y, x) (tests/tiffs.py), so no whole image is ever in this
process either. Peak RSS is sampled every 0.1 s over the prepare process and every process under it (Beam's worker
processes on 2 workers), summed; source Mpx/s is prepare's own figure (tile pixels / run seconds).

Every crop of each TIFF run is then checked against the functions the tile was made from: masks exactly, images
within JPEG's error, and every 8th image crop fits its own place better than any place 1 px away.

Goals: peak RSS for 40,000² within 10% of the 10,000² figure and under 1 GB; two workers ≥ 1.3× one on 40,000².

Beside the smallest TIFF, the same pair georeferenced (a UTM CRS and 0.3 m pixels, as GDAL writes the tags), and
georeferenced with a nodata value declared (GDAL_NODATA 0 on the image: every region's pixels are then compared with
it): what reading the grid, carrying each crop's transform, and nodata cost, side by side.

    ./dev bench giant            # all sizes (about 15 minutes on 2 cores; 2.5 GB of disk for the 40,000² pair)
    ./dev bench giant 10000      # only the sizes given
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

from benchmarks.bench_memory import make_tile
from segprep.formats import tfrecord, records
from tests.tiffs import pattern_classes, pattern_image, region, write_tiff

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (10_000, 20_000, 40_000)
TWO = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of `root_pid` and every process under it."""
    parents, rss = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/statm") as f:
                rss[int(name)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def run_prepare(*args: str) -> tuple[float, float, str]:
    """→ (peak RSS of the process tree in MiB, source Mpx/s as prepare reports it, its summary line)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.prepare", "--runner=DirectRunner", *args],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    sampler.join()
    if proc.returncode != 0:
        sys.exit(output[-3000:])
    summary = next(line for line in output.splitlines() if " crops in " in line)
    mpx = float(re.search(r"([\d.]+) source Mpx/s", summary).group(1))
    return peak[0] / 2**20, mpx, summary


def _error(image: np.ndarray, y: int, x: int, h: int, w: int) -> float:
    """Mean absolute error of a decoded crop's valid part against the source pattern at (y, x)."""
    source = region(pattern_image, y, y + h, x, x + w).astype(np.int16)
    return float(np.abs(image[:h, :w].astype(np.int16) - source).mean())


def check_crops(out: str, every: int = 8) -> tuple[int, float, int]:
    """Every crop of a run of `make_giant`'s tile against the functions it was made from: the mask exactly (a
    PNG), the image within JPEG's error (the tile's JPEG tiles, then the crop's own JPEG); JPEG's error is about
    what a 1-px shift of this pattern changes, so every `every`-th crop must also fit its own place better than
    the 4 places 1 px away. → (crops checked, the largest mean absolute error of an image crop, crops shift-checked).
    Exits on any mask that differs or any crop that fits elsewhere better."""
    checked, worst, shifted = 0, 0.0, 0
    for name in sorted(os.listdir(out)):
        if not name.endswith(".tfrecord"):
            continue
        for _, data in tfrecord.read(os.path.join(out, name)):
            f = {key: values for key, (_, values) in records.decode_example(data).items()}
            (y, x), side = f[records.CROP_OFFSET], f[records.SOURCE_HEIGHT][0]
            height = width = f[records.IMAGE_HEIGHT][0]
            want = np.full((height, width), 255, np.uint8)
            h, w = min(height, side - y), min(width, side - x)
            want[:h, :w] = region(pattern_classes, y, y + h, x, x + w)
            mask = cv2.imdecode(np.frombuffer(f[records.MASK_ENCODED][0], np.uint8), cv2.IMREAD_UNCHANGED)
            if not np.array_equal(mask, want):
                sys.exit(f"crop at {(y, x)} of {out}: its mask differs from the source")
            image = cv2.imdecode(np.frombuffer(f[records.IMAGE_ENCODED][0], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            error = _error(image, y, x, h, w)
            worst = max(worst, error)
            if checked % every == 0:
                near = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                        if 0 <= y + dy and 0 <= x + dx and y + dy + h <= side and x + dx + w <= side]
                others = [_error(image, yy, xx, h, w) for yy, xx in near]
                if others and min(others) <= error:
                    sys.exit(f"crop at {(y, x)} of {out}: its image fits a place 1 px away better than its own")
                shifted += 1
            checked += 1
    return checked, worst, shifted


def make_giant(root: str, side: int) -> None:
    for folder, fn, compression in (("images", pattern_image, "jpeg"), ("masks", pattern_classes, "deflate")):
        os.makedirs(os.path.join(root, folder, "train"), exist_ok=True)
        write_tiff(os.path.join(root, folder, "train", "tile.tif"), fn, side, side, tile=512, compression=compression)


def _georeferenced(root: str, tmp: str, side: int) -> list[tuple]:
    """The pair at `root` stamped with a grid (and then a nodata value), each prepared on 1 and 2 workers."""
    import shutil

    from segprep import geo

    rows = []
    for label, nodata in (("georeferenced", None), ("georef. + nodata 0", 0.0)):
        copy = os.path.join(tmp, "geo")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
        grid = geo.Grid("EPSG:32632", (412345.678901, 0.3, 0.0, 5823456.789012, 0.0, -0.3))
        for folder in ("images", "masks"):
            geo.stamp(os.path.join(copy, folder, "train", "tile.tif"), grid)
        if nodata is not None:
            import rasterio

            with rasterio.open(os.path.join(copy, "images", "train", "tile.tif"), "r+") as image:
                image.nodata = nodata
        for workers, extra in ((1, ()), (2, TWO)):
            out = os.path.join(tmp, "out")
            peak, mpx, _ = run_prepare("--input_dir", copy, "--output_dir", out, "--overwrite",
                                       "--images", "images/{split}/{id}.tif", "--masks", "masks/{split}/{id}.tif",
                                       *extra)
            rows.append((f"{side:,}² TIFF, {label}", workers, peak, mpx))
        shutil.rmtree(copy)
    return rows


def main(argv=()):
    sizes = tuple(int(a) for a in argv) or SIZES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_root = os.path.join(tmp, "jpeg")
        make_tile(jpeg_root)  # bench (c)'s 10,000² JPEG + colour PNG, VOC layout
        for workers, extra in ((1, ()), (2, TWO)):
            out = os.path.join(tmp, "out")
            peak, mpx, _ = run_prepare("--input_dir", jpeg_root, "--output_dir", out, "--overwrite", *extra)
            rows.append(("10,000² JPEG + PNG, whole", workers, peak, mpx))
        for side in sizes:
            root = os.path.join(tmp, f"tiff{side}")
            t = time.perf_counter()
            make_giant(root, side)
            made = time.perf_counter() - t
            mib = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs) / 2**20
            print(f"    (made the {side:,}² pair in {made:.0f} s: {mib:,.0f} MiB on disk)", flush=True)
            for workers, extra in ((1, ()), (2, TWO)):
                out = os.path.join(tmp, "out")
                peak, mpx, _ = run_prepare("--input_dir", root, "--output_dir", out, "--overwrite",
                                           "--images", "images/{split}/{id}.tif", "--masks", "masks/{split}/{id}.tif",
                                           *extra)
                rows.append((f"{side:,}² tiled TIFF, by window", workers, peak, mpx))
            if side == sizes[0]:
                rows += _georeferenced(root, tmp, side)
            checked, worst, shifted = check_crops(out)
            print(f"    (checked all {checked:,} crops of the {side:,}² tile against its source: masks equal, images "
                  f"within {worst:.2f} mean absolute error (JPEG); {shifted:,} of them fit their own place better "
                  "than any 1 px away)", flush=True)
            subprocess.run(["rm", "-rf", root], check=True)
    print("(o) giant tiles: peak RSS (prepare and its workers) and source Mpx/s, 1 and 2 workers; goals: 40,000² "
          "within 10% of 10,000² and < 1 GB; 2 workers ≥ 1.3× one:")
    print(f"    {'':34s} {'1 worker':>24s}   {'2 workers':>24s}   2 / 1")
    by = {(name, w): (peak, mpx) for name, w, peak, mpx in rows}
    for name in dict.fromkeys(name for name, *_ in rows):
        (p1, m1), (p2, m2) = by[name, 1], by[name, 2]
        print(f"    {name:34s} {p1:7,.0f} MiB {m1:6.2f} Mpx/s   {p2:7,.0f} MiB {m2:6.2f} Mpx/s   {m2 / m1:.2f}×")
    tiffs = [name for name in dict.fromkeys(n for n, *_ in rows) if "TIFF" in name]
    if len(tiffs) > 1:
        small, big = by[tiffs[0], 1][0], by[tiffs[-1], 1][0]
        print(f"    peak RSS {tiffs[-1].split()[0]} / {tiffs[0].split()[0]}, 1 worker: {big / small:.2f}×")


if __name__ == "__main__":
    main(sys.argv[1:])
