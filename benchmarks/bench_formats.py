"""(m) What the front door costs: prepare on 5000² aerial tiles stored as JPEG + PNG against the same tiles as
GeoTIFF-style TIFFs (uncompressed, deflate, LZW, JPEG-in-TIFF; tiled 256², masks deflate), side by side in source
Mpx/s; and listing 10,000 image files (plus their 10,000 masks) by pattern on a local disk.

Every prepare is a fresh process with one worker (`--runner=DirectRunner`, the same flags but the patterns), best
of two interleaved rounds; the decode cost per format is also timed alone, in this process.
"""

import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import tifffile

from segprep import codec, layouts, pairs, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TILES, SIDE = 4, 5000
ROUNDS = 2
LIST_FILES = 10_000


def _tile(i: int) -> tuple[np.ndarray, np.ndarray]:
    """An aerial-like 5000² tile: the sample's generator at 1000², scaled up with its objects (the mask nearest)."""
    image, classes = sample.make_pair(3000 + i, 1000, 1000)
    image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(i).normal(0, 4, (SIDE, SIDE, 1)).astype(np.float32)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, cv2.resize(classes, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)


def write_trees(tmp: str) -> dict[str, tuple[str, list[str]]]:
    """{case: (root, layout flags)} for the same tiles in each storage."""
    colors = sample.VOC.color_array()
    colors[255] = sample.VOC_BORDER_COLOR
    kinds = {"JPEG q90 + PNG mask": None, "TIFF uncompressed": None, "TIFF deflate": "deflate",
             "TIFF LZW": "lzw", "TIFF JPEG q90": "jpeg"}
    trees = {}
    for n, case in enumerate(kinds):
        root = os.path.join(tmp, f"tree{n}")
        os.makedirs(os.path.join(root, "images"))
        os.makedirs(os.path.join(root, "labels"))
        trees[case] = root
    for i in range(TILES):
        image, classes = _tile(i)
        mask = colors[classes]
        for case, compression in kinds.items():
            root = trees[case]
            if case.startswith("JPEG"):
                with open(f"{root}/images/t{i}.jpg", "wb") as f:
                    f.write(codec.encode_image(image, "jpeg", 90))
                with open(f"{root}/labels/t{i}.png", "wb") as f:
                    f.write(codec.encode_image(mask, "png"))
            else:
                args = {"compressionargs": {"level": 90}} if compression == "jpeg" else {}
                tifffile.imwrite(f"{root}/images/t{i}.tif", image, photometric="rgb", tile=(256, 256),
                                 compression=compression, **args)
                tifffile.imwrite(f"{root}/labels/t{i}.tif", mask, photometric="rgb", tile=(256, 256),
                                 compression="deflate")
    return {case: (root, ["--images", "images/{id}." + ("jpg" if case.startswith("JPEG") else "tif"),
                          "--masks", "labels/{id}." + ("png" if case.startswith("JPEG") else "tif"),
                          "--val_fraction", "0.25"])
            for case, root in trees.items()}


def run(root: str, out: str, flags: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", out,
                           *flags, "--runner=DirectRunner"], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    return time.perf_counter() - t


def decode_seconds(root: str, flags: list[str]) -> float:
    image = flags[1].replace("{id}", "t0")
    with open(os.path.join(root, image), "rb") as f:
        data = f.read()
    t = time.perf_counter()
    codec.decode_image(data)
    return time.perf_counter() - t


def listing_seconds(tmp: str) -> tuple[float, int]:
    root = os.path.join(tmp, "listing")
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(root, split, sub))
    for i in range(LIST_FILES):
        split = "val" if i % 10 == 0 else "train"
        open(os.path.join(root, split, "images", f"tile_{i:05d}.tif"), "wb").close()
        open(os.path.join(root, split, "masks", f"tile_{i:05d}.png"), "wb").close()
    spec = pairs.LayoutSpec("{split}/images/{id}.tif", "{split}/masks/{id}.png")
    best = None
    for _ in range(3):
        t = time.perf_counter()
        listing = layouts.find(root, spec)
        secs = time.perf_counter() - t
        best = secs if best is None else min(best, secs)
    return best, sum(listing.counts.values())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        secs, n = listing_seconds(tmp)
        print(f"(m) listing {n:,} image files and their {n:,} masks by pattern ('{{split}}/images/{{id}}.tif'), "
              f"local disk, best of 3: {secs * 1000:.0f} ms ({n / secs:,.0f} pairs/s)")
        trees = write_trees(tmp)
        best = {}
        for r in range(ROUNDS):
            for i, (case, (root, flags)) in enumerate(trees.items()):
                secs = run(root, os.path.join(tmp, f"out{r}-{i}"), flags)
                best[case] = min(secs, best.get(case, secs))
        mpx = TILES * SIDE * SIDE / 1e6
        base = best["JPEG q90 + PNG mask"]
        print(f"(m) prepare, {TILES} tiles of {SIDE}², 1 worker, fresh process, best of {ROUNDS}:")
        for case, secs in best.items():
            root, flags = trees[case]
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 2 ** 20
            print(f"    {case:22s} {secs:6.1f} s  {mpx / secs:5.2f} source Mpx/s  {base / secs:4.2f}× JPEG's  "
                  f"(one image decode {decode_seconds(root, flags):.2f} s; tree {size:,.0f} MiB)")


if __name__ == "__main__":
    main()
