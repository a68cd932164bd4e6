"""Train a multi-output Keras segmentation model on the shards prepare wrote.

    python -m trainer.train                                       # data/records in, runs/... out, runs/latest
    python -m trainer.train --data_dir gs://B/records --model_dir gs://B/runs/exp1 --epochs 50
    python -m trainer.train --distribution_strategy mirrored --mixed_precision   # every GPU of this machine
    python -m trainer.train --distribution_strategy tpu --tpu local --data_dir gs://B/records --model_dir gs://B/r
    python -m trainer.train --distribution_strategy multi_worker_mirrored ...    # on each worker, with TF_CONFIG
    python -m trainer.train --arch deeplabv3plus --backbone resnet50 --freeze_backbone_epochs 2   # ImageNet weights

A run dir (local or gs://) holds model.keras (loads with plain `keras.models.load_model`), best.keras (best val
mIoU of the main output over the whole run), log.csv (epoch, losses, mIoU per output, lr), tensorboard/,
serving/ (a SavedModel for TF Serving), segprep.json (palette and normalisation for predict) and, while
training, backup/: run the same command again after a crash and it resumes from the last finished epoch. The
default --model_dir is derived from the flags, so "the same command" finds its run. Training is repeatable: the
same command and --seed on the same machine write the same log.csv and weights, resumed or not. --batch_size is
per replica; the global batch and the peak learning rate grow with the number of replicas (see
trainer/distribute.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time

from segprep.formats import metadata as md
from segprep import runlock, storage
from segprep.formats import run_dir
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from trainer.lazy import Lazy, keras, tf
from trainer.common import (ARCH_OUTPUTS, ARCHS, BACKBONES, MODEL_REVISION, STRATEGIES, Augment, DataError, exists,
                            files, load_metadata)
from trainer.normalization import STATS, Normalization

# Imported at first use (TensorFlow, quietly): --help and usage mistakes answer without them.
data, distribute, loop, schedules, model_lib = (Lazy("trainer.data"), Lazy("trainer.distribute"),
                                                Lazy("trainer.loop"), Lazy("trainer.schedules"),
                                                Lazy("trainer.model"))

DEFAULT_DATA = "data/records"
RUNS = "runs"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # on the sample, seed 3 reached 0.71 val mIoU in 20 epochs (aeroplanes taken for boats); 30: 0.93
    batch_size: int = 8
    lr: float = 4e-3  # 2e-3: 0.71 val mIoU on the sample (an earlier model, 20 epochs)
    warmup_epochs: int = 0
    warmup_steps: int | None = None  # None: one epoch of steps
    loss_weights: dict | None = None  # None: 1.0 for "main", 0.2 for the others (the seed recipe's weights)
    seed: int = 0
    normalization: Normalization = Normalization()  # statistics, and whether the model applies them
    augment: Augment = Augment()
    train_split: str = "train"
    val_split: str = "val"
    class_weights: str = "none"  # or "median_frequency" (pixel counts), "repeat_factor" (crops holding each class)
    hard_pixels: float = 0.2  # the share of each output's pixels a training step's loss keeps, hardest first
    freeze_backbone_epochs: int = 0  # epochs that train the head only (a model with a "backbone" layer)
    # The side of the crops training steps see: random windows of each augmented crop (validation sees whole
    # crops); None: whole crops. Only for a model whose layers take another input size (multi and deconv).
    train_crop_size: int | None = None


def build_parser() -> argparse.ArgumentParser:
    p = Parser("train", prog="python -m trainer.train", description=__doc__.split("\n")[0], epilog=examples(__doc__))
    p.add_argument("--data_dir", default=DEFAULT_DATA,
                   help="prepare's --output_dir, local or gs://: its metadata.json names the shards to read "
                        "(default: %(default)s)")
    p.add_argument("--model_dir", help="run dir, local or gs:// (default: runs/<data>-<hash of the flags>)")
    p.add_argument("--epochs", type=cli.integer(1), default=TrainConfig.epochs,
                   help="passes over the training split, each of exactly records / global batch steps "
                        "(default: %(default)s)")
    p.add_argument("--batch_size", type=cli.integer(1), default=TrainConfig.batch_size,
                   help="crops per step on each replica; the global batch is this × replicas (default: %(default)s)")
    p.add_argument("--lr", type=cli.number(0.0, 10.0, low_open=True), default=TrainConfig.lr,
                   help="peak learning rate for one replica; with N replicas it is N × this, as the global batch "
                        "is N × --batch_size (default: %(default)s)")
    p.add_argument("--warmup_epochs", type=cli.integer(0), default=0,
                   help="the seed recipe's per-epoch warm-up: lr·i/num for epochs i < num (default: off)")
    p.add_argument("--warmup_steps", type=cli.integer(0), default=None,
                   help="per-step linear warm-up, then cosine decay to 0 (default: one epoch of steps)")
    p.add_argument("--class_weights", choices=("none", "median_frequency", "repeat_factor"),
                   default=TrainConfig.class_weights,
                   help="rare classes weigh more: median_frequency = each pixel's loss × median(freq) / freq of "
                        "its class, from the training split's pixel counts; repeat_factor = each crop's loss × "
                        f"max(1, sqrt({REPEAT_THRESHOLD:g} / f)) of the rarest class it holds, f the share of "
                        "training crops holding that class (LVIS's repeat-factor sampling, as a weight: from "
                        "metadata.json's class_crops and each record's class/present) (default: %(default)s)")
    p.add_argument("--hard_pixels", metavar="SHARE", type=cli.number(0.0, 1.0, low_open=True),
                   default=TrainConfig.hard_pixels,
                   help="online hard example mining: each training step's loss averages only the hardest SHARE of "
                        "each output's pixels on each replica (DeepLab's top_k_percent_pixels; unlabelled pixels "
                        "never count), so the many easy background pixels stop drowning the confused ones; 1 = "
                        "every pixel; validation always scores every pixel (default: %(default)s)")
    p.add_argument("--loss_weights", metavar="NAME=W,...",
                   help="each output's weight in the total loss, e.g. main=1,upsample=0.5,aux=0.2 "
                        "(default: 1 for main, 0.2 for the others)")
    p.add_argument("--seed", type=cli.integer(0), default=0,
                   help="seed of the weights' initialisation, the shuffling and the augmentation, ≥ 0 "
                        "(default: %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default="multi",
                   help="multi = transposed-convolution decoder (main) plus the upsample and aux heads, from "
                        "scratch; deconv = the main output alone; deeplabv3plus = DeepLabV3+ on an ImageNet "
                        "--backbone, with the same three outputs (default: %(default)s)")
    p.add_argument("--backbone", choices=BACKBONES,
                   help="the ImageNet encoder of --arch deeplabv3plus, from keras.applications: mobilenetv2 (fast), "
                        "resnet50 (the reference papers' choice, 5× the parameters), efficientnetv2b0 "
                        "(default: mobilenetv2)")
    p.add_argument("--backbone_weights", metavar="imagenet|none|PATH",
                   help="the backbone's starting weights: imagenet = Keras's ImageNet file from its cache "
                        "(~/.keras/models or $KERAS_HOME/models; fetched there on a connected machine), none = "
                        "random, or a weights file (default: imagenet)")
    p.add_argument("--freeze_backbone_epochs", type=cli.integer(0), default=None,
                   help="train only the decoder (the backbone frozen, its BatchNorm statistics too) for the first "
                        "N epochs, then everything (default: 0)")
    p.add_argument("--width", type=cli.integer(1), default=32,
                   help="channels of the first convolution, doubled at each stage: wider is slower and can be more "
                        "accurate (default: %(default)s)")
    p.add_argument("--normalization", choices=STATS,
                   help="the statistics of the model's first layer, which normalises raw RGB: dataset = the "
                        "training crops' RGB mean/std from metadata.json, simple = x/255 - 0.5; deeplabv3plus "
                        "applies its backbone's own preprocessing instead (default: dataset)")
    p.add_argument("--train_crop_size", metavar="N", type=cli.integer(8),
                   help="train on random N×N windows of each augmented crop, a multiple of 8 (DeepLab's "
                        "train_crop_size), for multi and deconv: they are fully convolutional, so validation, "
                        "best.keras, model.keras and predict still take whole crops. Smaller is faster per step and "
                        "sees less per epoch: on the sample, 192 of 256 made a step 2× faster but seed 0 ended at "
                        "0.61 val mIoU in 20 epochs, against 0.85 with whole crops (default: whole crops)")
    p.add_argument("--aug_scale", default=",".join(f"{v:g}" for v in Augment().scale),
                   help="random scale range MIN,MAX (e.g. 0.5,2), image and mask alike; 'off' to disable "
                        "(default: %(default)s)")
    p.add_argument("--aug_rotate", type=cli.number(0.0, 180.0), default=Augment().rotate_degrees,
                   help="max random rotation in degrees, 0 to disable (default: %(default)s)")
    p.add_argument("--no_flip", action="store_true", help="turn off random left-right flips")
    p.add_argument("--train_split", help="the split of --data_dir to train on (default: train, else the one split "
                                         "prepare cut random crops from: training, Train, ...)")
    p.add_argument("--val_split", help="the split to validate on (default: val or validation, else the one split "
                                       "of tiles)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a --model_dir holding a run: its model, log, TensorBoard logs, backup and "
                        "eval-*.json are deleted first")
    p.add_argument("--distribution_strategy", choices=STRATEGIES, default="auto",
                   help="auto = mirrored over this machine's GPUs when there are several, else one device; "
                        "multi_worker_mirrored reads TF_CONFIG; tpu needs --tpu (default: %(default)s)")
    p.add_argument("--mixed_precision", action="store_true",
                   help="compute in 16 bits, keep weights and outputs in float32: mixed_float16 on GPUs (with loss "
                        "scaling), mixed_bfloat16 on TPUs and CPUs; the saved model.keras is float32")
    p.add_argument("--no_op_determinism", action="store_true",
                   help="let TensorFlow choose its fastest kernels instead of deterministic ones: the input order, "
                        "augmentation and initial weights stay seeded, but runs of one command may then differ "
                        "(op determinism costs about 6%% on 2 CPU cores; on GPUs it can cost more, and an op "
                        "without a deterministic GPU kernel stops the run with one line naming it and this flag)")
    p.add_argument("--tpu", help="TPU address for --distribution_strategy tpu: 'local' on a TPU VM, or a name or "
                                 "grpc:// address")
    return p


def _loss_weights(text: str | None, outputs: list[str]) -> dict:
    weights = {name: (1.0 if name == "main" else 0.2) for name in outputs}
    if text:
        for item in text.split(","):
            name, _, value = item.partition("=")
            if name.strip() not in weights:
                raise UsageError(f"--loss_weights names {name.strip()!r}; the model's outputs are "
                                 f"{', '.join(outputs)}.")
            try:
                weight = float(value)
            except ValueError:
                weight = float("nan")
            if not 0.0 <= weight < float("inf"):  # NaN fails too
                raise UsageError(f"--loss_weights: {item!r} is not name=number with a finite number ≥ 0. Received: "
                                 f"{text}") from None
            weights[name.strip()] = weight
    if not any(weights.values()):
        raise UsageError(f"--loss_weights: every weight is 0, so nothing would be learned. Received: {text}")
    return weights


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, replicas: int = 1):
    """Adam with the run's schedule; the peak LR is `cfg.lr` × replicas (the global batch grows with them)."""
    lr = cfg.lr * replicas
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else steps_per_epoch
    if not cfg.warmup_epochs:  # else the loop sets the per-epoch rate
        lr = schedules.WarmupCosine(lr, warmup, max(1, cfg.epochs * steps_per_epoch - warmup))
    optimizer = keras.optimizers.Adam(lr)
    if keras.mixed_precision.global_policy().name == "mixed_float16":  # float16 gradients underflow unscaled
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


REPEAT_THRESHOLD = 0.1  # classes in fewer than this share of the training crops get a repeat factor above 1


def repeat_factors(records: int, class_crops, threshold: float = REPEAT_THRESHOLD) -> list[float]:
    """LVIS's repeat factors from a split's per-class crop counts: r_c = max(1, sqrt(threshold / f_c)), f_c the
    share of the `records` crops holding class c; 1 for classes no crop holds. Raises DataError for shards written
    before metadata.json counted them (`class_crops` None)."""
    if class_crops is None:
        raise DataError("--class_weights repeat_factor needs the per-class crop counts (class_crops) that "
                        "prepare writes to metadata.json since it records class presence; rerun prepare")
    records = max(1, int(records))
    return [max(1.0, math.sqrt(threshold / (c / records))) if c else 1.0 for c in class_crops]


def median_frequency(class_pixels) -> list[float]:
    """SegNet's median-frequency balancing from a split's pixel counts: weight_c = median(freq) / freq_c over the
    classes that occur; classes that do not occur get 1 (they never reach the loss)."""
    counts = [float(c) for c in class_pixels]
    total = sum(counts) or 1.0
    freqs = [c / total for c in counts if c > 0]
    if not freqs:
        return [1.0] * len(counts)
    median = statistics.median(freqs)
    return [median / (c / total) if c > 0 else 1.0 for c in counts]


def mixed_precision_policy(placement: distribute.Placement) -> str:
    """mixed_float16 on GPUs (their fast path), mixed_bfloat16 on TPUs and CPUs (bfloat16 keeps float32's range,
    so no loss scaling; CPUs with AVX512-BF16 run it faster)."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") and not placement.is_tpu else "mixed_bfloat16"


def fit(model: keras.Model, data_dir: str, model_dir: str, cfg: TrainConfig, meta: md.Metadata | None = None,
        verbose: int = 2, extra_callbacks: list | None = None,
        placement: distribute.Placement | None = None) -> loop.History:
    """Trains `model` (any functional model whose inputs/outputs the pipeline can fill, built under
    `placement.strategy.scope()`) and saves the run. `cfg.batch_size` is per replica."""
    placement = placement or distribute.make("auto")
    meta = meta or load_metadata(data_dir)
    num_classes = meta.num_classes
    channels = {n: t.shape[-1] for n, t in zip(model.output_names, model.outputs)}
    if any(c != num_classes for c in channels.values()):
        raise UsageError(f"The model's outputs have {channels} classes but {data_dir}/metadata.json has "
                         f"{num_classes}.")
    inputs, targets = data.strides_of(model)
    window, train_model = train_crops(model, cfg.train_crop_size, meta.crop_size)
    global_batch = cfg.batch_size * placement.replicas
    steps = data.steps(meta, cfg.train_split, global_batch)
    val_steps = data.steps(meta, cfg.val_split, global_batch)
    train_split = meta.split(cfg.train_split)
    factors = (repeat_factors(train_split.records, train_split.class_crops) if cfg.class_weights == "repeat_factor"
               else None)

    def dataset(split: str, training: bool, start_epoch: int = 0):
        ds = data.make_dataset(data_dir, split, global_batch, training=training, inputs=inputs, targets=targets,
                               aug=cfg.augment, normalize=cfg.normalization.for_pipeline(meta), seed=cfg.seed,
                               meta=meta, pad_batches=True, crop_weights=factors if training else None,
                               start_epoch=start_epoch, window=window if training else None)
        options = tf.data.Options()
        # Training data on several workers: each reads every shard and keeps its share of each global batch, so
        # the batches are those of one device whatever the number of workers (the epochs' file order is drawn
        # inside the pipeline, where FILE sharding cannot reach).
        options.experimental_distribute.auto_shard_policy = (
            distribute.shard_policy(0 if training else len(meta.split(split).shards), placement.workers))
        return ds.with_options(options)

    datasets = (lambda start_epoch: dataset(cfg.train_split, True, start_epoch), dataset(cfg.val_split, False))
    with placement.strategy.scope():
        optimizer = make_optimizer(cfg, steps, placement.replicas)
        model.compile(optimizer=optimizer)  # so best.keras carries the optimizer (the loop computes the losses)
        optimizer.build(model.trainable_variables)
    weights = cfg.loss_weights or _loss_weights(None, list(model.output_names))
    epoch_lr = ((lambda epoch: schedules.epoch_warmup(epoch, cfg.lr * placement.replicas, cfg.warmup_epochs))
                if cfg.warmup_epochs else None)
    files.makedirs(model_dir)
    if placement.is_chief:  # this folder is a segprep run: only then may --overwrite and the run delete in it
        files.write_text(f"{model_dir}/{run_dir.MARKER}", run_dir.marker_text())
    class_weights = median_frequency(train_split.class_pixels or ()) if cfg.class_weights == "median_frequency" \
        else None
    runner = loop.Loop(loop.Steps(model, optimizer, weights, num_classes, placement, class_weights,
                                  cfg.hard_pixels, train_model), placement,
                       model_dir, save_best=lambda path: save_keras(model, path), epoch_lr=epoch_lr,
                       callbacks=extra_callbacks, verbose=verbose,
                       epoch_begin=_freezer(model, cfg.freeze_backbone_epochs))
    try:
        history = _run(runner, datasets, cfg, steps, val_steps, meta, data_dir)
        path = placement.write_dir(model_dir, run_dir.MODEL)
        save_inference_model(model, path)
        placement.cleanup(path)
        if placement.is_chief and len(model.inputs) == 1:  # a model of several inputs has no one image to serve
            export_serving(model, f"{model_dir}/{run_dir.SERVING}")
        if placement.is_chief:
            info = run_dir.RunInfo(palette=meta.palette, crop_size=meta.crop_size, model=model.name,
                                   rgb_mean=meta.rgb_mean, rgb_std=meta.rgb_std, data_dir=data_dir,
                                   bands=meta.bands, image_range=meta.image_range,  # predict reads images alike
                                   config=dataclasses.asdict(cfg), strategy=placement.describe(),
                                   **normalization_info(model, cfg, meta))
            files.write_text(f"{model_dir}/{run_dir.INFO}", run_dir.dumps(info))
        runner.finish()
    finally:
        placement.remove_temp(model_dir)
    return history


def train_crops(model: keras.Model, size: int | None, crop: int) -> tuple[int, keras.Model]:
    """TrainConfig.train_crop_size → (the training crops' side, the model a training step calls: `model`'s own
    layers on that size, BatchNorm fused; see trainer.model.for_training). A UsageError for a size the model
    cannot take."""
    if size is None or size == crop:
        return crop, model_lib.for_training(model)
    _, targets = data.strides_of(model)
    stride = max(8, *targets.values())
    if size > crop or size % stride:
        raise UsageError(_train_crop_error(size, crop, stride))
    try:
        return size, model_lib.for_training(model, size)
    except ValueError:
        raise UsageError(_train_crop_error(size, crop, stride, model.name)) from None


def _train_crop_error(size: int, crop: int, stride: int = 8, fixed: str | None = None) -> str:
    if fixed:
        return (f"--train_crop_size {size}: {fixed} is built for whole {crop}×{crop} crops (its layers take no "
                "other size); leave the flag out.")
    return (f"--train_crop_size {size}: must be a multiple of {stride} and at most prepare's crop size {crop} "
            "(the training windows are cut from its crops).")


def _freezer(model: keras.Model, epochs: int):
    """--freeze_backbone_epochs: (epoch) → whether the trainable weights changed, freezing the layer named
    "backbone" (weights and BatchNorm statistics) before epoch `epochs` and thawing it from then on."""
    if not epochs:
        return None
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        raise UsageError(f"--freeze_backbone_epochs: the model {model.name} has no layer named 'backbone'.") from None

    def at(epoch: int) -> bool:
        frozen = epoch < epochs
        if backbone.trainable != frozen:
            return False
        backbone.trainable = not frozen
        return True

    return at


def normalization_info(model: keras.Model, cfg: TrainConfig, meta: md.Metadata) -> dict:
    """segprep.json's normalisation (RunInfo's normalize_* fields): what the model (or the pipeline) does to raw
    RGB, for predict and evaluate and for the user. A backbone model applies its backbone's own preprocessing,
    described, with the per-channel mean and std it equals."""
    from trainer import backbones

    for name, spec in backbones.SPECS.items():
        if model.name == f"segprep_deeplabv3plus_{name}":
            return {"normalize_stats": f"backbone {name}", "normalize_in_model": True,
                    "normalize_mean": tuple(spec.mean), "normalize_std": tuple(spec.std),
                    "preprocessing": spec.preprocessing}
    return cfg.normalization.run_info(meta)


def _run(runner: loop.Loop, datasets, cfg: TrainConfig, steps: int, val_steps: int, meta: md.Metadata, data_dir: str):
    """The loop, with a corrupt shard named (TF's own error names an offset, not the file), and an op without a
    deterministic kernel pointed at --no_op_determinism."""
    try:
        return runner.fit(datasets[0], datasets[1], cfg.epochs, steps, val_steps)
    except tf.errors.UnimplementedError as e:
        raise no_deterministic_kernel(e) or e
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise data.damaged(e, meta, data_dir, [cfg.train_split, cfg.val_split]) or e


def no_deterministic_kernel(error) -> UsageError | None:
    """A UsageError saying what to do when `error` is TensorFlow refusing an op under op determinism (on GPUs:
    "... deterministic GPU implementation ... not available"); None for any other error."""
    text = (getattr(error, "message", None) or str(error)).strip()
    if "deterministic" not in text.lower():
        return None
    return UsageError(f"{text.splitlines()[0]} TensorFlow has no deterministic kernel for this op on this device, "
                      "and trainer.train runs with op determinism for repeatable runs: pass --no_op_determinism "
                      "(the input and initial weights stay seeded).")


def save_keras(model: keras.Model, path: str) -> None:
    """model.save that also writes to gs:// (Keras writes a local file; TF's filesystem copies it up)."""
    if not storage.is_remote(path):
        files.makedirs(os.path.dirname(path) or ".")
        model.save(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        model.save(local)
        files.copy(local, path)


def inference_model(model: keras.Model) -> keras.Model:
    """The trained weights in an uncompiled float32 copy with standard layers only, so plain
    `keras.models.load_model` reads it in any Python with Keras, without importing segprep. Synchronised
    BatchNorm and mixed precision only matter while training."""
    text = json.dumps(model.get_config()).replace('"synchronized": true', '"synchronized": false')
    text = re.sub(r'"name": "mixed_(b?float16)"', '"name": "float32"', text)
    clone = model.__class__.from_config(json.loads(text))
    clone.set_weights(model.get_weights())
    return clone


def save_inference_model(model: keras.Model, path: str) -> None:
    """model.keras: see `inference_model`. best.keras keeps the optimizer for fine-tuning."""
    save_keras(inference_model(model), path)


def export_serving(model: keras.Model, path: str, output: str = "main") -> None:
    """RUN/serving/: a SavedModel for TF Serving and Vertex AI. Its `serving_default` signature takes `images`, a
    uint8 RGB batch [N, H, W, 3] of any size, and returns `probabilities` [N, H, W, C] (float32 softmax of the
    `output`) and `classes` [N, H, W] (uint8). The image is cut into windows of the training crop (padded at the
    far edges), predicted in one batch and put back: trainer.predict's windows without overlap."""
    model = inference_model(model)
    size = int(model.inputs[0].shape[1])
    name = model.inputs[0].name

    def serve(images):
        n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        x = tf.pad(images, [[0, 0], [0, (-h) % size], [0, (-w) % size], [0, 0]])
        rows, cols = tf.shape(x)[1] // size, tf.shape(x)[2] // size
        tiles = tf.reshape(tf.transpose(tf.reshape(x, [n, rows, size, cols, size, 3]), [0, 1, 3, 2, 4, 5]),
                           [-1, size, size, 3])
        logits = tf.cast(model({name: tf.cast(tiles, tf.float32)}, training=False)[output], tf.float32)
        if logits.shape[1] != size:  # a low-resolution output: logits upsampled as predict does
            logits = tf.image.resize(logits, [size, size], method="bilinear")
        probs = tf.nn.softmax(logits, axis=-1)
        classes = probs.shape[-1]
        probs = tf.reshape(tf.transpose(tf.reshape(probs, [n, rows, cols, size, size, classes]), [0, 1, 3, 2, 4, 5]),
                           [n, rows * size, cols * size, classes])[:, :h, :w]
        return {"probabilities": probs, "classes": tf.cast(tf.argmax(probs, -1), tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    with tempfile.TemporaryDirectory() as tmp:  # written whole, then copied: gs:// gets no half-written export
        archive.write_out(f"{tmp}/serving", verbose=False)
        if files.exists(path):
            files.rmtree(path)
        _copy_tree(f"{tmp}/serving", path)


def _copy_tree(src: str, dst: str) -> None:
    for folder, _, names in files.walk(src):
        target = dst + folder[len(src):]
        files.makedirs(target)
        for name in names:
            files.copy(f"{folder}/{name}", f"{target}/{name}")


def _arch_flags(args: argparse.Namespace) -> None:
    """Checks the backbone flags against --arch and fills in their defaults (before TensorFlow loads)."""
    given = [flag for flag, value in (("--backbone", args.backbone), ("--backbone_weights", args.backbone_weights),
                                      ("--freeze_backbone_epochs", args.freeze_backbone_epochs)) if value is not None]
    if args.arch != "deeplabv3plus":
        if given:
            raise UsageError(f"{given[0]} is for --arch deeplabv3plus: the {args.arch} model has no backbone.")
        args.normalization = args.normalization or "dataset"
        return
    if args.normalization is not None:
        raise UsageError("--normalization: --arch deeplabv3plus normalises with its backbone's own preprocessing "
                         "(recorded in the run's segprep.json); leave the flag out.")
    args.backbone = args.backbone or "mobilenetv2"
    args.backbone_weights = args.backbone_weights or "imagenet"
    if args.backbone_weights not in ("imagenet", "none") and not exists(args.backbone_weights):
        raise UsageError(f"--backbone_weights {args.backbone_weights}: no such file (imagenet, none or a weights "
                         "file).")
    if args.freeze_backbone_epochs is None:
        args.freeze_backbone_epochs = 0
    if args.freeze_backbone_epochs >= args.epochs:
        raise UsageError(f"--freeze_backbone_epochs {args.freeze_backbone_epochs} leaves no epoch of the --epochs "
                         f"{args.epochs} to train the backbone in; choose fewer.")


def _default_model_dir(args: argparse.Namespace) -> str:
    keys = {k: v for k, v in vars(args).items() if k not in ("model_dir", "overwrite", "verbose")}
    for name in ("backbone", "backbone_weights", "freeze_backbone_epochs", "no_op_determinism",  # added later:
                 "train_crop_size"):
        if not keys.get(name):  # runs without them keep their hash
            keys.pop(name, None)
    for name, default in (("train_split", "train"), ("val_split", "val"),  # added later: old names keep their hash
                          ("hard_pixels", 1.0)):
        if keys.get(name) in (None, default):
            keys.pop(name, None)
    if keys.get("arch") in ("multi", "deconv"):
        keys["model_revision"] = MODEL_REVISION
    digest = hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:8]
    name = os.path.basename(args.data_dir.rstrip("/")) or "data"
    return os.path.join(RUNS, f"{name}-{digest}")


def _link_latest(model_dir: str) -> None:
    if storage.is_remote(model_dir):
        return
    parent = os.path.dirname(os.path.abspath(model_dir))
    link = os.path.join(parent, "latest")
    if os.path.islink(link) or not os.path.exists(link):
        tmp = f"{link}.tmp{os.getpid()}"
        os.symlink(os.path.basename(os.path.abspath(model_dir)), tmp)
        os.replace(tmp, link)


def run(argv: list[str] | None = None) -> loop.History:
    args = build_parser().parse_args(argv)
    if args.warmup_epochs and args.warmup_steps is not None:
        raise UsageError("Choose one of --warmup_epochs (per epoch) and --warmup_steps (per step).")
    if args.distribution_strategy == "tpu" and not args.tpu:
        raise UsageError("--distribution_strategy tpu needs --tpu ADDRESS ('local' on a TPU VM).")
    _arch_flags(args)
    scale = None
    if args.aug_scale and args.aug_scale != "off":
        try:
            lo, hi = (float(v) for v in args.aug_scale.split(","))
        except ValueError:
            lo = hi = float("nan")
        if not 0.0 < lo <= hi < float("inf"):  # 0 would divide by zero in the augmentation; NaN fails too
            raise UsageError(f"--aug_scale must be MIN,MAX with 0 < MIN ≤ MAX, like 0.75,1.25. Received: "
                             f"{args.aug_scale}")
        scale = (lo, hi)
    try:
        meta = load_metadata(args.data_dir)
        args.train_split = args.train_split or meta.training_split()
        args.val_split = args.val_split or meta.validation_split()
        meta.split(args.train_split)
        meta.split(args.val_split)
    except (DataError, md.MetadataError) as e:
        raise UsageError(str(e)) from None
    _loss_weights(args.loss_weights, list(ARCH_OUTPUTS[args.arch]))  # checked before TensorFlow is imported
    crop = meta.crop_size
    if args.train_crop_size not in (None, crop):
        fixed = "deeplabv3plus" if args.arch == "deeplabv3plus" and args.train_crop_size < crop else None
        if fixed or args.train_crop_size > crop or args.train_crop_size % 8:
            raise UsageError(_train_crop_error(args.train_crop_size, crop, 8, fixed))
    model_dir = (args.model_dir or _default_model_dir(args)).rstrip("/")
    check_run_dir(model_dir)
    check_finished(model_dir, args.overwrite)
    placement = distribute.make(args.distribution_strategy, args.tpu)
    try:  # one run per run dir: only the chief writes there
        with runlock.hold(model_dir, "python -m trainer.train") if placement.is_chief else contextlib.nullcontext():
            if placement.is_chief:  # under the lock, looked at again: another run may have finished meanwhile
                check_run_dir(model_dir)
                check_finished(model_dir, args.overwrite)
            if args.overwrite and placement.is_chief:
                clear_run(model_dir)
            return _train_with_policy(args, meta, model_dir, placement, scale)
    except runlock.FolderError as e:
        raise UsageError(f"--model_dir: {e}") from None


def check_finished(model_dir: str, overwrite: bool) -> None:
    finished = exists(f"{model_dir}/{run_dir.MODEL}") and not exists(f"{model_dir}/{run_dir.BACKUP}")
    if finished and not overwrite:
        raise UsageError(f"--model_dir {model_dir} holds a finished run (model.keras); pass --overwrite to train "
                         "it again, or choose another --model_dir.")


def _train_with_policy(args, meta: md.Metadata, model_dir: str, placement, scale) -> loop.History:
    policy = mixed_precision_policy(placement) if args.mixed_precision else "float32"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        with op_determinism(not args.no_op_determinism):
            return _train(args, meta, model_dir, placement, policy, scale)
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def op_determinism(on: bool):
    """TensorFlow's op determinism (`tf.config.experimental.enable_op_determinism`) for the block, as it was after:
    every op then gives the same result for the same input on the same machine, so with the seeded, stateless
    input pipeline (trainer/data.py) and seeded initialisers, the same command trains the same weights."""
    from tensorflow.python.framework import config as tf_config  # is_/disable_: not in the public API

    before = tf_config.is_op_determinism_enabled()
    if on and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if on and not before:
            tf_config.disable_op_determinism()


def _train(args, meta: md.Metadata, model_dir: str, placement: distribute.Placement, policy: str, scale) -> loop.History:
    keras.utils.set_random_seed(args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                      warmup_steps=args.warmup_steps, seed=args.seed,
                      augment=Augment(flip=not args.no_flip, scale=scale, rotate_degrees=args.aug_rotate),
                      normalization=Normalization(args.normalization or "dataset"),
                      class_weights=args.class_weights, hard_pixels=args.hard_pixels,
                      train_split=args.train_split, val_split=args.val_split,
                      freeze_backbone_epochs=args.freeze_backbone_epochs or 0,
                      train_crop_size=args.train_crop_size)
    with placement.strategy.scope():
        model = model_lib.build_model(meta.num_classes, meta.crop_size, args.width, args.arch,
                                      *cfg.normalization.mean_std(meta), backbone=args.backbone,
                                      backbone_weights=args.backbone_weights)
    cfg = dataclasses.replace(cfg, loss_weights=_loss_weights(args.loss_weights, list(model.output_names)))
    precision = "" if policy == "float32" else f", {policy}"
    print(f"train: {placement.describe()}{precision}; global batch {args.batch_size * placement.replicas} "
          f"({args.batch_size} per replica), peak lr {args.lr * placement.replicas:g}; {model.name}, "
          f"{model.count_params():,} parameters{_backbone_text(args)}, outputs {', '.join(model.output_names)}; "
          f"{meta.split(cfg.train_split).records} {cfg.train_split} / "
          f"{meta.split(cfg.val_split).records} {cfg.val_split} crops{_window_text(args, meta)} → "
          f"{model_dir}",
          flush=True)
    started = time.time()
    history = fit(model, args.data_dir, model_dir, cfg, meta, placement=placement)
    if placement.is_chief:
        _link_latest(model_dir)
    print(f"train: done in {time.time() - started:.0f} s; best val mIoU (main) {history.best:.3f} at epoch "
          f"{history.best_epoch + 1} of the whole run; model: {model_dir}/model.keras", flush=True)
    return history


def _window_text(args, meta: md.Metadata) -> str:
    window = args.train_crop_size
    return "" if window in (None, meta.crop_size) else f", trained as {window}×{window} windows"


def _backbone_text(args) -> str:
    if args.arch != "deeplabv3plus":
        return ""
    frozen = f", frozen for {args.freeze_backbone_epochs} epochs" if args.freeze_backbone_epochs else ""
    return f" ({args.backbone} backbone, {args.backbone_weights} weights{frozen})"


def is_run_dir(model_dir: str) -> bool:
    """True for a folder a segprep run wrote: its marker, or (runs older than the marker) segprep.json or a
    backup's state.json."""
    return any(exists(f"{model_dir}/{name}") for name in (run_dir.MARKER, run_dir.INFO, run_dir.STATE))


def check_run_dir(model_dir: str) -> None:
    """A --model_dir that holds anything but a segprep run is refused before anything is written or deleted in it:
    a run deletes its backup/ and replaces serving/ there, and --overwrite deletes a run's files."""
    if not storage.is_remote(model_dir) and os.path.lexists(model_dir) and not os.path.isdir(model_dir):
        raise UsageError(f"--model_dir {model_dir} is a file, not a folder: choose another --model_dir.")
    if not files.isdir(model_dir):
        return
    names = sorted(n for n in files.listdir(model_dir) if n != runlock.LOCK_NAME)
    if names and not is_run_dir(model_dir):
        raise UsageError(f"--model_dir {model_dir} holds files no segprep run wrote (e.g. {names[0]}), and a run "
                         "deletes and replaces files in its dir: choose a new or empty --model_dir.")
    links = [n for n in names if _run_file(n) and not storage.is_remote(model_dir)
             and os.path.islink(os.path.join(model_dir, n))]
    if links:
        raise UsageError(f"--model_dir {model_dir} holds {links[0]}, a symbolic link to "
                         f"{os.path.realpath(os.path.join(model_dir, links[0]))}, under a name a run writes and "
                         "deletes: a run never writes or deletes through a link; remove the link, or choose another "
                         "--model_dir.")


def _run_file(name: str) -> bool:
    """Whether a run (or `evaluate`) writes `name` in its run dir: what --overwrite deletes."""
    return name in run_dir.FOLDERS or name in run_dir.FILES or run_dir.is_eval_file(name)


def clear_run(model_dir: str) -> None:
    """--overwrite: everything a run and `evaluate` wrote in `model_dir`, so the new run starts clean; only in a
    segprep run's folder without links under those names (see `check_run_dir`)."""
    if not files.isdir(model_dir):
        return
    check_run_dir(model_dir)
    for name in files.listdir(model_dir):
        path = f"{model_dir}/{name}"
        if name in run_dir.FOLDERS:
            files.rmtree(path)
        elif _run_file(name):
            files.remove([path])


def main(argv: list[str] | None = None) -> int:
    return cli.main("train", run, argv, (DataError,))


if __name__ == "__main__":
    sys.exit(main())
