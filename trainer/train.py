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

`build_parser` is over 80 lines: the flag table, one entry a flag with its help.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time

from segprep import cli, runlock, storage
from segprep.cli import Parser, UsageError, examples
from segprep.formats import metadata as md
from trainer.common import (ARCH_OUTPUTS, ARCHS, BACKBONES, MODEL_REVISION, STRATEGIES, Augment, DataError, exists,
                            load_metadata)
from trainer.lazy import Lazy, keras
from trainer.normalization import STATS, Normalization
from trainer.run_folders import check_finished, check_run_dir, clear_run
from trainer import training
from trainer.training import (REPEAT_THRESHOLD, TrainConfig, loss_weights, mixed_precision_policy, op_determinism,
                              train_crop_error)

# Imported at first use (TensorFlow, quietly): --help and usage mistakes answer without them.
distribute, loop, model_lib = Lazy("trainer.distribute"), Lazy("trainer.loop"), Lazy("trainer.model")

DEFAULT_DATA = "data/records"


RUNS = "runs"


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
    p.add_argument("--inputs", metavar="NAME,...",
                   help="the model's inputs: image (the RGB crops) and extra inputs prepare stored "
                        "(--extra_inputs), e.g. image,dsm; each is a named input of the model, normalised by its own "
                        "statistics (default: image and every extra input metadata.json lists)")
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
    keys = {k: v for k, v in vars(args).items() if k not in ("model_dir", "overwrite", "verbose", "input_names")}
    for name in ("backbone", "backbone_weights", "freeze_backbone_epochs", "no_op_determinism",  # added later:
                 "train_crop_size", "inputs"):
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
    loss_weights(args.loss_weights, list(ARCH_OUTPUTS[args.arch]))  # checked before TensorFlow is imported
    args.input_names = model_inputs(args.inputs, meta, args.data_dir, args.arch)
    crop = meta.crop_size
    if args.train_crop_size not in (None, crop):
        fixed = "deeplabv3plus" if args.arch == "deeplabv3plus" and args.train_crop_size < crop else None
        if fixed or args.train_crop_size > crop or args.train_crop_size % 8:
            raise UsageError(train_crop_error(args.train_crop_size, crop, 8, fixed))
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


def _train_with_policy(args, meta: md.Metadata, model_dir: str, placement, scale) -> loop.History:
    policy = mixed_precision_policy(placement) if args.mixed_precision else "float32"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        with op_determinism(not args.no_op_determinism):
            return _train(args, meta, model_dir, placement, policy, scale)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(args, meta: md.Metadata, model_dir: str, placement: distribute.Placement, policy: str,
           scale) -> loop.History:
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
                                      backbone_weights=args.backbone_weights,
                                      extras=tuple(model_lib.ExtraSpec.of(meta.extra_inputs[n])
                                                   for n in args.input_names if n != "image"),
                                      image="image" in args.input_names)
    cfg = dataclasses.replace(cfg, loss_weights=loss_weights(args.loss_weights, list(model.output_names)))
    precision = "" if policy == "float32" else f", {policy}"
    print(f"train: {placement.describe()}{precision}; global batch {args.batch_size * placement.replicas} "
          f"({args.batch_size} per replica), peak lr {args.lr * placement.replicas:g}; {model.name}, "
          f"{model.count_params():,} parameters{_backbone_text(args)}, inputs {', '.join(args.input_names)}, "
          f"outputs {', '.join(model.output_names)}; "
          f"{meta.split(cfg.train_split).records} {cfg.train_split} / "
          f"{meta.split(cfg.val_split).records} {cfg.val_split} crops{_window_text(args, meta)} → "
          f"{model_dir}",
          flush=True)
    started = time.time()
    history = training.fit(model, args.data_dir, model_dir, cfg, meta, placement=placement)
    if placement.is_chief:
        _link_latest(model_dir)
    print(f"train: done in {time.time() - started:.0f} s; best val mIoU (main) {history.best:.3f} at epoch "
          f"{history.best_epoch + 1} of the whole run; model: {model_dir}/model.keras", flush=True)
    return history


def model_inputs(flag: str | None, meta: md.Metadata, data_dir: str, arch: str) -> list[str]:
    """--inputs → the model's input names, image first: a UsageError naming an input the data does not hold."""
    held = ["image"] + sorted(name for name, info in meta.extra_inputs.items() if info.channels)
    if flag is None:
        return held
    names = [n.strip() for n in flag.split(",") if n.strip()]
    unknown = [n for n in names if n not in held]
    if unknown or not names:
        raise UsageError(f"--inputs {flag}: {data_dir.rstrip('/')} holds the inputs {', '.join(held)}"
                         + (f", not {unknown[0]!r}" if unknown else "") + "; extra inputs come from prepare's "
                         "--extra_inputs.")
    if len(set(names)) != len(names):
        raise UsageError(f"--inputs {flag}: an input is named twice.")
    if arch == "deeplabv3plus" and "image" not in names:
        raise UsageError(f"--inputs {flag}: --arch deeplabv3plus takes the image on its backbone; add image, or "
                         "use --arch multi.")
    return sorted(names, key=held.index)


def _window_text(args, meta: md.Metadata) -> str:
    window = args.train_crop_size
    return "" if window in (None, meta.crop_size) else f", trained as {window}×{window} windows"


def _backbone_text(args) -> str:
    if args.arch != "deeplabv3plus":
        return ""
    frozen = f", frozen for {args.freeze_backbone_epochs} epochs" if args.freeze_backbone_epochs else ""
    return f" ({args.backbone} backbone, {args.backbone_weights} weights{frozen})"


def main(argv: list[str] | None = None) -> int:
    return cli.main("train", run, argv, (DataError,))


if __name__ == "__main__":
    sys.exit(main())
