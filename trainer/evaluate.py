"""Per-class IoU, mIoU and pixel accuracy of a trained run on a split of the shards (default: val).

    python -m trainer.evaluate --model_dir runs/latest --data_dir data/records

Validation shards hold tiles that cover every source pixel exactly once (padding is ignored), so the figures are
those of whole images. Prints a table and writes MODEL_DIR/eval-SPLIT.json.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import tensorflow as tf

from segprep import metadata as md
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from trainer import data
from trainer.predict import Predictor


def confusion(model: keras.Model, ds: tf.data.Dataset, steps: int, num_classes: int, output: str = "main"):
    """(C, C) int64 confusion matrix, rows = truth, over pixels whose truth is not 255."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for inputs, targets in ds.take(steps):
        pred = np.argmax(model.predict_on_batch(inputs)[output], -1).ravel()
        true = targets[output].numpy().ravel()
        keep = true < num_classes
        cm += np.bincount(true[keep].astype(np.int64) * num_classes + pred[keep],
                          minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return cm


def scores(cm: np.ndarray, names: list[str]) -> dict:
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = cm.sum(1) > 0
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    return {"miou": float(np.nanmean(np.where(present | (cm.sum(0) > 0), iou, np.nan))),
            "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1)),
            "pixels": int(cm.sum()),
            "per_class": {n: {"iou": None if np.isnan(v) else float(v), "pixels": int(p)}
                          for n, v, p in zip(names, iou, cm.sum(1)) if p > 0 or cm[:, names.index(n)].sum() > 0}}


def run(argv: list[str] | None = None) -> dict:
    p = Parser("evaluate", prog="python -m trainer.evaluate", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("--model_dir", default="runs/latest", help="a trained run (default: %(default)s)")
    p.add_argument("--data_dir", help="prepare's output (default: the run's training data)")
    p.add_argument("--split", default="val", help="(default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--output", default="main", help="which model output (default: %(default)s)")
    args = p.parse_args(argv)
    predictor = Predictor(args.model_dir, args.output)
    data_dir = args.data_dir or predictor.info["data_dir"]
    try:
        meta = data.load_metadata(data_dir)
        md.split(meta, args.split)
    except (data.DataError, md.MetadataError) as e:
        raise UsageError(str(e)) from None
    if int(meta["num_classes"]) != int(predictor.info["num_classes"]):
        raise UsageError(f"The model predicts {predictor.info['num_classes']} classes but {data_dir} has "
                         f"{meta['num_classes']}.")
    model = predictor.model
    inputs, targets = data.strides_of(model)
    ds = data.make_dataset(data_dir, args.split, args.batch_size, training=False, inputs=inputs, targets=targets,
                           normalize=predictor.pipeline_normalization, meta=meta)
    cm = confusion(model, ds, data.steps(meta, args.split, args.batch_size), int(meta["num_classes"]), args.output)
    result = scores(cm, list(meta["class_names"]))
    result.update(split=args.split, data_dir=data_dir, output=args.output)
    print(f"{'class':16s} {'IoU':>7s} {'pixels':>12s}")
    for name, row in result["per_class"].items():
        iou = "—" if row["iou"] is None else f"{row['iou']:.4f}"
        print(f"{name:16s} {iou:>7s} {row['pixels']:12,d}")
    print(f"{'mIoU':16s} {result['miou']:7.4f}\n{'pixel accuracy':16s} {result['pixel_accuracy']:7.4f}")
    with tf.io.gfile.GFile(f"{args.model_dir.rstrip('/')}/eval-{args.split}.json", "w") as f:
        f.write(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    return cli.main("evaluate", run, argv, (data.DataError,))


if __name__ == "__main__":
    sys.exit(main())
