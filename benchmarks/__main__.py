"""Benchmarks, each printing ratios measured side by side in one run.

    ./dev bench                 # all of them (a few minutes on 2 cores)
    ./dev bench lookup          # (a) mask lookup vs the seed recipe
    ./dev bench prepare         # (b) prepare throughput: DirectRunner 1 and 2 workers vs a plain loop
    ./dev bench memory          # (c) peak RSS for one 10,000 × 10,000 tile; (k) for 2 and 64 tiles of 3000×4000
    ./dev bench input           # (d, e) trainer input pipeline vs the seed recipe's loader and vs training;
                                #   (s) prepare and the input pipeline with one extra float input vs RGB only
    ./dev bench train           # (d, e, f) and the val mIoU of the default training for seeds 0-4 (5 runs)
    ./dev bench masks           # (g) restoring JPEG-damaged masks with --unknown_colors=nearest
    ./dev bench predict         # (h) peak RSS of predict on a 10,000² tile
    ./dev bench distribute      # (i) training steps/s: one device vs mirrored over 2 logical devices
    ./dev bench scan            # (j) segprep.scan on 1,000 pairs, 1 worker vs every core; (q) its leakage checks
    ./dev bench oversample      # (p) --oversample_fraction 0 vs 0.33: crops holding a rare class, its val IoU
    ./dev bench arch            # (r) each arch and backbone: parameters, training steps/s, peak RSS, vs input
    ./dev bench onednn          # (l) training steps/s with TensorFlow's oneDNN operations on and off
    ./dev bench formats         # (m) prepare on 5000² tiles: JPEG vs TIFF storages; listing 10,000 files by pattern
    ./dev bench verify          # (n) segprep.verify on 1 GiB of shards: --quick vs every record decoded
    ./dev bench giant [SIDE..]  # (o) tiled TIFFs of 10,000², 20,000², 40,000² by window vs a 10,000² JPEG
    ./dev bench read            # (t) records/s read: tf.data, segprep.torch (0/2 workers), ArrayRecord at random,
                                #   the tfrecord package; ArrayRecord group size 1 vs 64
"""

import sys

from benchmarks import (bench_arch, bench_distribute, bench_extras, bench_formats, bench_giant, bench_lookup, bench_masks,
                        bench_memory, bench_onednn, bench_oversample, bench_predict, bench_prepare, bench_read,
                        bench_scan, bench_train, bench_verify)

ALL = {"lookup": bench_lookup.main, "prepare": bench_prepare.main, "memory": bench_memory.main,
       "input": lambda: (bench_train.main(("input",)), bench_extras.main()), "train": bench_train.main, "masks": bench_masks.main,
       "predict": bench_predict.main, "distribute": bench_distribute.main,
       "scan": bench_scan.main, "onednn": bench_onednn.main, "formats": bench_formats.main,
       "verify": bench_verify.main, "giant": bench_giant.main, "oversample": bench_oversample.main,
       "arch": bench_arch.main, "read": bench_read.main}

if __name__ == "__main__":
    if sys.argv[1:2] == ["giant"]:  # takes the tile sides to run
        bench_giant.main(sys.argv[2:])
        sys.exit()
    names = sys.argv[1:] or [n for n in ALL if n != "input"]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]}; choose from {', '.join(ALL)}")
    for name in names:
        ALL[name]()
