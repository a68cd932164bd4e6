"""Predict colour masks for images of any size with a trained run.

    python -m trainer.predict --model_dir runs/latest --input photo.jpg --output_dir preds/
    python -m trainer.predict --model_dir runs/latest --input folder/ --output_dir preds/
    python -m trainer.predict --model_dir runs/latest --input VOC_ROOT --split val --output_dir preds/

For each image, writes ID.png (colour mask in the dataset's palette) and ID_overlay.jpg (mask over the photo).
Images larger than the training crop are predicted with overlapping sliding windows whose class probabilities
are averaged; windows are run one row of windows at a time and finished rows are written out, so memory stays
bounded on a 10,000 × 10,000 tile. Images smaller than the crop are padded as in training and cut back.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from segprep import codec, layout
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from segprep.palette import Palette
from trainer import schedules  # noqa: F401 - registers WarmupCosine, so best.keras checkpoints load too
from trainer.normalization import Normalization

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class Predictor:
    """A trained run: its model, palette and input normalisation."""

    def __init__(self, model_dir: str, output: str = "main"):
        model_dir = model_dir.rstrip("/")
        for name in ("model.keras", "segprep.json"):
            if not tf.io.gfile.exists(f"{model_dir}/{name}"):
                raise UsageError(f"No {model_dir}/{name}: --model_dir must be a finished `python -m trainer.train` "
                                 "run.")
        with tf.io.gfile.GFile(f"{model_dir}/segprep.json") as f:
            self.info = json.load(f)
        self.model = keras.models.load_model(_local_copy(f"{model_dir}/model.keras"))
        self.output = output
        self.crop = int(self.info["crop_size"])
        self.palette = Palette(tuple(self.info["class_names"]), tuple(map(tuple, self.info["class_colors"])),
                               tuple(map(tuple, self.info.get("ignore_colors", []))))
        # What the input pipeline did before the model saw the image (the default model normalises itself).
        in_model, mean, std = Normalization.from_json(self.info)
        self.mean, self.std = (None, None) if in_model else (mean, std)
        self.pipeline_normalization = None if in_model else (mean.tolist(), std.tolist())
        self.input_name = self.model.inputs[0].name

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, S, S, C) float32 softmax of the chosen output."""
        x = windows if self.mean is None else (windows.astype(np.float32) - self.mean) / self.std
        logits = self.model.predict_on_batch({self.input_name: x})[self.output]
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))

    def predict(self, image: np.ndarray, overlap: float = 0.25, batch: int = 8) -> np.ndarray:
        """(H, W, 3) uint8 RGB → (H, W) uint8 class indices."""
        h, w = image.shape[:2]
        s = self.crop
        stride = max(1, int(round(s * (1 - overlap))))
        ys = _starts(h, s, stride)
        xs = _starts(w, s, stride)
        out = np.empty((h, w), np.uint8)
        pad_h, pad_w = max(h, s), max(w, s)
        padded = image if (pad_h, pad_w) == (h, w) else np.pad(image, ((0, pad_h - h), (0, pad_w - w), (0, 0)))
        # A rolling strip of accumulated probabilities: rows [top, top + s) of the padded image.
        top = 0
        acc = np.zeros((s, pad_w, self.model.outputs[0].shape[-1]), np.float32)
        for i, y in enumerate(ys):
            if y > top:  # rows above y are final: no later window reaches them
                shift = y - top
                out[top:min(y, h)] = np.argmax(acc[:shift], -1)[: min(y, h) - top, :w]
                acc = np.concatenate([acc[shift:], np.zeros((shift,) + acc.shape[1:], np.float32)])
                top = y
            for j in range(0, len(xs), batch):
                group = xs[j:j + batch]
                probs = self.probabilities(np.stack([padded[y:y + s, x:x + s] for x in group]))
                for x, p in zip(group, probs):
                    acc[:, x:x + s] += p
        out[top:h] = np.argmax(acc[: h - top], -1)[:, :w]
        return out

    def write(self, image: np.ndarray, classes: np.ndarray, out_dir: str, name: str) -> list[str]:
        colors = self.palette.colorize(classes)
        overlay = (0.5 * image + 0.5 * colors).astype(np.uint8)
        paths = [f"{out_dir}/{name}.png", f"{out_dir}/{name}_overlay.jpg"]
        for path, data in zip(paths, (codec.encode_image(colors, "png"), codec.encode_image(overlay, "jpeg", 90))):
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(data)
        return paths


def _starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts covering [0, size): every `stride`, the last one flush with the end."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride))
    return starts + [size - crop]


def _local_copy(path: str) -> str:
    """keras.models.load_model reads local files; copy a gs:// model down first."""
    if "://" not in path:
        return path
    local = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"segprep-{os.getpid()}-model.keras")
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def list_inputs(spec: str, split: str | None) -> list[tuple[str, str]]:
    """→ [(name, path)] for an image file, a folder of images, or a VOC root with --split."""
    if tf.io.gfile.isdir(spec):
        split_file = layout.split_path(spec, split or "val")
        if split or tf.io.gfile.exists(split_file):
            if not tf.io.gfile.exists(split_file):
                raise UsageError(f"--split {split}: no {split_file}.")
            with tf.io.gfile.GFile(split_file) as f:
                ids = layout.parse_split_list(f.read())
            return [(i, layout.image_path(spec, i)) for i in ids]
        names = sorted(n for n in tf.io.gfile.listdir(spec) if n.lower().endswith(IMAGE_EXTS))
        if not names:
            raise UsageError(f"--input {spec} holds no .jpg/.jpeg/.png images.")
        return [(os.path.splitext(n)[0], f"{spec.rstrip('/')}/{n}") for n in names]
    if tf.io.gfile.exists(spec):
        return [(os.path.splitext(os.path.basename(spec))[0], spec)]
    raise UsageError(f"--input {spec} does not exist.")


def run(argv: list[str] | None = None) -> int:
    p = Parser("predict", prog="python -m trainer.predict", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("--model_dir", default="runs/latest", help="a trained run (default: %(default)s)")
    p.add_argument("--input", required=True, help="an image, a folder of images, or a VOC root (with --split)")
    p.add_argument("--split", help="with a VOC root: which ImageSets/Segmentation list (default: val)")
    p.add_argument("--output_dir", default="preds", help="(default: %(default)s)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap, 0..0.9 (default: 0.25)")
    p.add_argument("--output", default="main", help="which model output to use (default: %(default)s)")
    args = p.parse_args(argv)
    if not 0 <= args.overlap <= 0.9:
        raise UsageError(f"--overlap must be in 0..0.9. Received: {args.overlap}")
    predictor = Predictor(args.model_dir, args.output)
    inputs = list_inputs(args.input, args.split)
    tf.io.gfile.makedirs(args.output_dir)
    failed = 0
    for name, path in inputs:
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                image = codec.decode_image(f.read())
        except (codec.DecodeError, OSError, tf.errors.OpError) as e:
            print(f"predict: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        classes = predictor.predict(image, args.overlap)
        paths = predictor.write(image, classes, args.output_dir.rstrip("/"), name)
        print(f"predict: {path} → {paths[0]}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.main("predict", run, argv)


if __name__ == "__main__":
    sys.exit(main())
