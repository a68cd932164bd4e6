"""(s) What one extra float input costs: the bundled sample with a float32 DSM per image (a smooth random surface
in metres, stored as zlib-compressed raw float32 crops), side by side with the same sample RGB only:

  - prepare crops/s (DirectRunner, one worker), RGB only vs with `--extra_inputs dsm=...`;
  - the trainer's input pipeline (trainer.data.make_dataset, train split, trainer.train's default augmentation)
    examples/s feeding `image` alone vs `image` and `dsm`, each alternated three times, best of each;
  - the shards' bytes per crop.

No goal beyond "costs no more than the DSM's own bytes": a 256² float32 crop is 256 KiB raw, more than its JPEG.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.bench_train import REPO, _rate

BATCH = 8


def _sample_with_dsm(tmp: str) -> str:
    import cv2
    import tifffile

    root = os.path.join(tmp, "voc")
    shutil.copytree(os.path.join(REPO, "data", "sample_voc"), root)
    os.makedirs(os.path.join(root, "dsm"))
    rng = np.random.default_rng(0)
    for name in sorted(os.listdir(os.path.join(root, "JPEGImages"))):
        h, w = cv2.imread(os.path.join(root, "JPEGImages", name), cv2.IMREAD_GRAYSCALE).shape[:2]
        coarse = rng.normal(120, 10, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
        surface = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        tifffile.imwrite(os.path.join(root, "dsm", name.replace(".jpg", ".tif")), surface)
    return root


def _prepare(root: str, out: str, extra: bool) -> float:
    flags = ["--extra_inputs", "dsm=dsm/{id}.tif"] if extra else []
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", out,
                           "--runner=DirectRunner", *flags], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return time.perf_counter() - t


def _crops_and_bytes(out: str) -> tuple[int, int]:
    """(records, shard bytes) of a prepare output."""
    info = json.load(open(os.path.join(out, "metadata.json")))
    crops = sum(s["records"] for s in info["splits"].values())
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if "-of-" in f)
    return crops, size


def main():
    from trainer import data

    with tempfile.TemporaryDirectory() as tmp:
        root = _sample_with_dsm(tmp)
        plain, extra = os.path.join(tmp, "plain"), os.path.join(tmp, "extra")
        _prepare(root, os.path.join(tmp, "warm"), False)  # first imports, page cache
        secs = {}
        for out, with_dsm in ((plain, False), (extra, True)):
            secs[with_dsm] = _prepare(root, out, with_dsm)
        (n_plain, b_plain), (n_extra, b_extra) = _crops_and_bytes(plain), _crops_and_bytes(extra)
        print(f"(s) one extra float32 input (a DSM) beside RGB, on the sample ({n_plain} crops):")
        print(f"    prepare: RGB only {n_plain / secs[False]:.1f} crops/s, with the DSM {n_extra / secs[True]:.1f} "
              f"crops/s → {secs[False] / secs[True]:.2f}× (whole command, Beam start-up included)")
        print(f"    shards: {b_plain / n_plain / 1024:.0f} KiB a crop RGB only, {b_extra / n_extra / 1024:.0f} KiB with "
              f"the DSM")
        targets = {"main": 1, "upsample": 1, "aux": 8}
        rates = {False: [], True: []}
        for _ in range(3):
            for with_dsm in (False, True):
                inputs = {"image": 1, "dsm": 1} if with_dsm else {"image": 1}
                ds = data.make_dataset(extra, "train", BATCH, training=True, inputs=inputs, targets=targets)
                rates[with_dsm].append(_rate(iter(ds), 40))
        rgb, dsm = max(rates[False]), max(rates[True])
        print(f"    input pipeline (default augmentation): image alone {rgb:.0f} examples/s, image and dsm "
              f"{dsm:.0f} examples/s → {dsm / rgb:.2f}×")


if __name__ == "__main__":
    main()
