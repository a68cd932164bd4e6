"""Per-class IoU, mIoU and pixel accuracy of a trained run on a split of the shards (default: val).

    python -m trainer.evaluate --model_dir runs/latest --data_dir data/records

Validation shards hold tiles that cover every source pixel exactly once (padding is ignored), so the figures are
those of whole images. Prints a table and writes MODEL_DIR/eval-SPLIT.json.
"""

from __future__ import annotations

import json
import sys

import time

import numpy as np

from segprep.formats import metadata as md
from segprep.formats import run_dir
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from segprep.progress import Progress
from trainer import common
from trainer.common import DataError, load_metadata
from trainer.lazy import Lazy, tf
from trainer.predict import Predictor, read_run_info

data, loop = Lazy("trainer.data"), Lazy("trainer.loop")


def confusion(model, ds, steps: int, num_classes: int, output: str = "main", progress: Progress | None = None):
    """(C, C) int64 confusion matrix of a Keras `model` over a tf.data `ds`, rows = truth, over pixels whose truth
    is not 255."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for inputs, targets in ds.take(steps):
        if progress:
            progress.update(1)
        cm += loop.confusion(targets[output], model.predict_on_batch(inputs)[output], num_classes).numpy()
    return cm


def scores(cm: np.ndarray, names: list[str]) -> dict:
    """mIoU (as the training loop logs it: common.miou), pixel accuracy and per-class IoU of a confusion matrix."""
    iou, _ = common.class_iou(cm)
    return {"miou": common.miou(cm),
            "pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
            "pixels": int(cm.sum()),
            "per_class": {n: {"iou": None if np.isnan(v) else float(v), "pixels": int(p)}
                          for n, v, p in zip(names, iou, cm.sum(1)) if p > 0 or cm[:, names.index(n)].sum() > 0}}


def build_parser() -> Parser:
    p = Parser("evaluate", prog="python -m trainer.evaluate", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("--model_dir", default="runs/latest",
                   help="a finished training run, local or gs:// (default: %(default)s)")
    p.add_argument("--data_dir", help="prepare's output dir, local or gs:// (default: the one the run trained on)")
    p.add_argument("--split", help="which split of --data_dir to score (default: val or validation, else the one "
                                   "split of tiles)")
    p.add_argument("--batch_size", type=cli.integer(1), default=8,
                   help="crops per prediction step; only speed and memory depend on it (default: %(default)s)")
    p.add_argument("--output", default="main",
                   help="which model output to score: main, upsample or aux for the default model "
                        "(default: %(default)s)")
    return p


def run(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    info = read_run_info(args.model_dir.rstrip("/"))  # wrong dirs are answered before TensorFlow loads
    data_dir = args.data_dir or info.data_dir
    if not data_dir:
        raise UsageError(f"{args.model_dir.rstrip('/')}/{run_dir.INFO} does not say which data the run trained on: "
                         "pass --data_dir.")
    try:
        meta = load_metadata(data_dir)
        args.split = args.split or meta.validation_split()
        meta.split(args.split)
    except (DataError, md.MetadataError) as e:
        raise UsageError(str(e)) from None
    if meta.num_classes != info.num_classes:
        raise UsageError(f"The model predicts {info.num_classes} classes but {data_dir} has "
                         f"{meta.num_classes}.")
    started = time.time()
    predictor = Predictor(args.model_dir, args.output)
    model = predictor.model
    inputs, targets = data.strides_of(model)
    ds = data.make_dataset(data_dir, args.split, args.batch_size, training=False, inputs=inputs, targets=targets,
                           normalize=predictor.pipeline_normalization, meta=meta)
    steps = data.steps(meta, args.split, args.batch_size)
    bar = Progress("evaluate", steps, "batches")
    try:
        cm = confusion(model, ds, steps, meta.num_classes, args.output, bar)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        bar.close()
        raise data.damaged(e, meta, data_dir, [args.split]) or e
    bar.close()
    result = scores(cm, list(meta.class_names))
    result.update(split=args.split, data_dir=data_dir, output=args.output)
    print(f"{'class':16s} {'IoU':>7s} {'pixels':>12s}")
    for name, row in result["per_class"].items():
        iou = "—" if row["iou"] is None else f"{row['iou']:.4f}"
        print(f"{name:16s} {iou:>7s} {row['pixels']:12,d}")
    print(f"{'mIoU':16s} {result['miou']:7.4f}\n{'pixel accuracy':16s} {result['pixel_accuracy']:7.4f}")
    path = f"{args.model_dir.rstrip('/')}/{run_dir.eval_file(args.split)}"
    common.files.write_text(path, json.dumps(result, indent=1))
    crops = meta.split(args.split).records
    seconds = time.time() - started
    print(f"evaluate: {crops:,} {args.split} crops ({result['pixels']:,} labelled pixels) in {seconds:.1f} s → "
          f"{path}")
    return result


def main(argv: list[str] | None = None) -> int:
    return cli.main("evaluate", run, argv, (DataError,))


if __name__ == "__main__":
    sys.exit(main())
