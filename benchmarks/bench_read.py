"""(t) Reading prepare's output in every framework: records/s decoded (the image and the mask to arrays), side by
side in one run on the same records: the bundled sample prepared with 16 crops an image into 4 shards, once as
TFRecord and once as ArrayRecord (the same records). Each row runs in a fresh process (the PyTorch rows never
import TensorFlow), two passes, the better one kept:

  - tf.data over TFRecord: the trainer's input (trainer.data.make_dataset, evaluation order, batches of 32);
  - the same over ArrayRecord (ArrayRecord's reader behind tf.data's from_generator);
  - segprep.torch over TFRecord (IterableDataset) and ArrayRecord (map-style, shuffled: random access), DataLoader
    with 0 and 2 workers (persistent), batches of 32, int64 masks (the default) and uint8 masks (mask_dtype): an
    int64 mask is 512 KiB a crop that DataLoader's workers pass through shared memory;
  - the `tfrecord` package (its reader, then the same OpenCV decoding as segprep.torch), one process;
  - raw reads, no decoding: TFRecord in sequence vs ArrayRecord at random, and ArrayRecord written with group size
    64 instead of 1, in sequence and at random (why prepare writes group size 1).

Goals: PyTorch over TFRecord (2 workers) ≥ 0.8× tf.data's decode rate; ArrayRecord random access ≥ 0.5× of
sequential TFRecord (decoded, one process each).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.bench_train import REPO

BATCH = 32


def _prepare(out: str, fmt: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--output_dir", out, "--runner=DirectRunner",
                           "--crops_per_image", "16", "--num_shards", "4", "--file_format", fmt], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])


def _regroup(src: str, out: str, group: int) -> None:
    """A copy of an ArrayRecord output with every shard rewritten at another group size."""
    import shutil

    from segprep.formats import array_record, shards

    shutil.copytree(src, out)
    for name in os.listdir(out):
        if name.endswith(array_record.SUFFIX):
            path = os.path.join(out, name)
            data = [d for _, d in shards.read(path)]
            array_record.write(path, data, f"group_size:{group},uncompressed")


def _train_shards(out: str) -> list[str]:
    meta = json.load(open(os.path.join(out, "metadata.json")))
    return [os.path.join(out, n) for n in meta["splits"]["train"]["shards"]]


def _timed(passes) -> float:
    """Best records/s of two passes; `passes()` → records read."""
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        n = passes()
        best = max(best, n / (time.perf_counter() - t))
    return best


def row(kind: str, out: str, workers: int = 0, mask: str = "int64") -> float:
    """One measurement, in this process: records/s."""
    if kind == "tf.data":
        from trainer import data

        ds = data.make_dataset(out, "train", BATCH, training=False)
        steps = data.steps(data.load_metadata(out), "train", BATCH)
        return _timed(lambda: sum(int(x["image"].shape[0]) for x, _ in ds.take(steps)))  # a fresh pass each
    if kind == "torch":
        from torch.utils.data import DataLoader

        import segprep.torch

        import torch

        dataset = segprep.torch.dataset(out, "train", shuffle=True, seed=0, mask_dtype=getattr(torch, mask))
        loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)
        assert "tensorflow" not in sys.modules
        return _timed(lambda: sum(len(b["id"]) for b in loader))
    if kind == "torch-sequential":  # no shuffle: TFRecord in file order / ArrayRecord in index order
        from torch.utils.data import DataLoader

        import segprep.torch

        loader = DataLoader(segprep.torch.dataset(out, "train"), batch_size=BATCH, num_workers=0)
        return _timed(lambda: sum(len(b["id"]) for b in loader))
    if kind == "tfrecord-package":
        import numpy as np
        from tfrecord.reader import tfrecord_loader

        from segprep import codec

        description = {"image/encoded": "byte", "image/segmentation/class/encoded": "byte"}

        def one():
            n = 0
            for path in _train_shards(out):
                for rec in tfrecord_loader(path, None, description):
                    codec.decode_image(np.asarray(rec["image/encoded"]).tobytes())
                    codec.decode_mask(np.asarray(rec["image/segmentation/class/encoded"]).tobytes())
                    n += 1
            return n
        return _timed(one)
    if kind == "raw-sequential":
        from segprep.formats import shards

        return _timed(lambda: sum(1 for p in _train_shards(out) for _ in shards.read(p)))
    if kind == "raw-random":
        import random

        from segprep.formats import array_record

        paths = _train_shards(out)
        readers = [array_record.open_reader(p, array_record.READ_RANDOM) for p in paths]
        keys = [(s, i) for s, r in enumerate(readers) for i in range(r.num_records())]
        random.Random(0).shuffle(keys)

        def one():
            for s, i in keys:
                readers[s].read([i])
            return len(keys)
        return _timed(one)
    raise ValueError(kind)


def _measure(kind: str, out: str, workers: int = 0, mask: str = "int64") -> float:
    proc = subprocess.run([sys.executable, "-c", f"from benchmarks.bench_read import row; "
                           f"print(row({kind!r}, {out!r}, {workers}, {mask!r}))"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tfr, arr, arr64 = (os.path.join(tmp, n) for n in ("tfrecord", "array_record", "array_record_g64"))
        _prepare(tfr, "tfrecord")
        _prepare(arr, "array_record")
        _regroup(arr, arr64, 64)
        records = json.load(open(os.path.join(tfr, "metadata.json")))["splits"]["train"]["records"]
        size = sum(os.path.getsize(p) for p in _train_shards(tfr)) / records / 1024
        print(f"(t) reading {records} training crops (256², {size:.0f} KiB a record, 4 shards), records/s, "
              f"{os.cpu_count()} cores")
        rows = [
            ("tf.data over TFRecord (the trainer's input)", "tf.data", tfr, 0),
            ("tf.data over ArrayRecord (from_generator)", "tf.data", arr, 0),
            ("segprep.torch TFRecord, 0 workers", "torch", tfr, 0),
            ("segprep.torch TFRecord, 2 workers", "torch", tfr, 2),
            ("segprep.torch TFRecord, 2 workers, uint8 masks", "torch", tfr, 2, "uint8"),
            ("segprep.torch ArrayRecord (random), 0 workers", "torch", arr, 0),
            ("segprep.torch ArrayRecord (random), 2 workers", "torch", arr, 2),
            ("segprep.torch ArrayRecord (random), 2 workers, uint8 masks", "torch", arr, 2, "uint8"),
            ("segprep.torch TFRecord in order, 0 workers", "torch-sequential", tfr, 0),
            ("tfrecord package + OpenCV decode", "tfrecord-package", tfr, 0),
            ("raw: TFRecord in sequence", "raw-sequential", tfr, 0),
            ("raw: ArrayRecord group 1 in sequence", "raw-sequential", arr, 0),
            ("raw: ArrayRecord group 1 at random", "raw-random", arr, 0),
            ("raw: ArrayRecord group 64 in sequence", "raw-sequential", arr64, 0),
            ("raw: ArrayRecord group 64 at random", "raw-random", arr64, 0),
        ]
        rates = {}
        for label, kind, out, workers, *mask in rows:
            rates[label] = _measure(kind, out, workers, *mask)
            print(f"  {label:58s} {rates[label]:10.0f}")
        tf_rate = rates[rows[0][0]]
        torch2 = rates["segprep.torch TFRecord, 2 workers"]
        torch_u8 = rates["segprep.torch TFRecord, 2 workers, uint8 masks"]
        print(f"  PyTorch over TFRecord (2 workers) / tf.data: {torch2 / tf_rate:.2f}x, with uint8 masks "
              f"{torch_u8 / tf_rate:.2f}x (goal >= 0.8)")
        random_decoded = rates["segprep.torch ArrayRecord (random), 0 workers"]
        sequential = rates["segprep.torch TFRecord in order, 0 workers"]
        print(f"  ArrayRecord at random / TFRecord in sequence, decoded, one process: {random_decoded / sequential:.2f}x"
              f" (goal >= 0.5); raw reads: {rates['raw: ArrayRecord group 1 at random'] / rates['raw: TFRecord in sequence']:.2f}x")
        print(f"  group 64 vs 1: in sequence {rates['raw: ArrayRecord group 64 in sequence'] / rates['raw: ArrayRecord group 1 in sequence']:.2f}x,"
              f" at random {rates['raw: ArrayRecord group 64 at random'] / rates['raw: ArrayRecord group 1 at random']:.2f}x")
        print(f"  tf.data over ArrayRecord / over TFRecord: {rates[rows[1][0]] / tf_rate:.2f}x")


if __name__ == "__main__":
    main()
