"""(j) `python -m segprep.scan` on 1,000 VOC-sized pairs (500 × 375 JPEG images, colour masks with VOC's colours and
border): wall time with one worker and with every core (joblib), side by side; (q) the leakage checks between
splits beside the scan without them, and the perceptual-hash threshold measured: copies vs distinct scenes.
"""

import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from segprep import codec, layout, sample
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR
from segprep.tools import leakage
from tests.masks import voc_like_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = 1000


def make_tree(root):
    for sub in (layout.IMAGE_DIR, layout.MASK_DIR, layout.SPLIT_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    colors = VOC.color_array()
    colors[IGNORE_LABEL] = VOC_BORDER_COLOR
    ids = [f"m{i:05d}" for i in range(COUNT)]
    for i, image_id in enumerate(ids):
        cv2.imwrite(layout.mask_path(root, image_id), colors[voc_like_mask(i)][..., ::-1])
        image, _ = sample.make_pair(i, 500, 375)
        with open(layout.image_path(root, image_id), "wb") as f:
            f.write(codec.encode_image(image, "jpeg", 90))
    for split, part in (("train", ids[:800]), ("val", ids[800:])):
        with open(layout.split_path(root, split), "w") as f:
            f.write("\n".join(part) + "\n")


def timed(root, jobs, *flags):
    env = dict(os.environ, PYTHONPATH=REPO)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "segprep.scan", "--input_dir", root, "--jobs", str(jobs), *flags],
                          check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, proc.stdout


def threshold(distinct=500, copies=200):
    """(the largest distance of a re-encoded, 90%-resized copy from its original, the smallest between distinct
    scenes, their medians) over sample scenes of 500 × 375."""
    hashes, worst = [], []
    for i in range(distinct):
        image, _ = sample.make_pair(i, 500, 375)
        data = codec.encode_image(image, "jpeg", 90)
        hashes.append(leakage.phash(leakage.thumbnail(data, 500, 375)))
        if i < copies:
            small = np.ascontiguousarray(cv2.resize(image, (450, 337), interpolation=cv2.INTER_AREA))
            copy = codec.encode_image(small, "jpeg", 75)
            worst.append(leakage.distance(hashes[-1], leakage.phash(leakage.thumbnail(copy, 450, 337))))
    words = np.frombuffer(b"".join(hashes), np.uint64).reshape(distinct, -1)
    bits = np.bitwise_count(words[:, None] ^ words[None, :]).sum(-1)[np.triu_indices(distinct, 1)]
    return max(worst), int(np.median(worst)), int(bits.min()), int(np.median(bits)), bits.size


def main():
    with tempfile.TemporaryDirectory() as tmp:
        make_tree(tmp)
        one, _ = timed(tmp, 1, "--no_leakage")
        every, leaks = [], []
        for _ in range(3):  # alternately, best of 3: start-up and the page cache vary between runs
            every.append(timed(tmp, -1, "--no_leakage")[0])
            seconds, out = timed(tmp, -1)
            leaks.append(seconds)
        every, leaks = min(every), min(leaks)
    print(f"(j) scan of {COUNT:,} pairs of 500×375: {one:.1f} s with 1 worker, {every:.1f} s with {os.cpu_count()} "
          f"(→ {one / every:.2f}×), Python start-up included; {COUNT / every:.0f} pairs/s")
    said = next(line for line in out.splitlines() if line.startswith("leakage:"))
    print(f"(q) with the leakage checks (images read whole, digested, perceptual-hashed): {leaks:.1f} s vs "
          f"{every:.1f} s without, best of 3 each (→ {leaks / every:.2f}× the time); it said: {said}")
    copy_max, copy_median, distinct_min, distinct_median, pairs = threshold()
    print(f"    threshold: copies re-encoded at quality 75 and resized to 90% are {copy_max} bits from their "
          f"originals at most (median {copy_median}); {pairs:,} pairs of distinct scenes are {distinct_min} bits "
          f"apart at least (median {distinct_median}); the default --duplicate_distance is "
          f"{leakage.DEFAULT_DISTANCE} of {leakage.HASH_BITS}")


if __name__ == "__main__":
    main()
