"""Training a segmentation model on prepare's shards, as a library: `fit(model, data_dir, model_dir, TrainConfig)`.
`python -m trainer.train` (trainer/train.py) is the command around it.

What a run does: the input pipeline of trainer/data.py, the loss and steps of trainer/loop.py (warm-up, hard-pixel
mining, class weights), the saving of trainer/saving.py; the run dir's files are segprep/formats/run_dir.py's.
Training is repeatable: the same config, data and seed on the same machine train the same weights (op
determinism), resumed or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics

from segprep.cli import UsageError
from segprep.formats import metadata as md
from segprep.formats import run_dir
from trainer import saving
from trainer.common import Augment, DataError, files, load_metadata
from trainer.lazy import Lazy, keras, tf
from trainer.normalization import Normalization

# Imported at first use (TensorFlow, quietly).
data, distribute, loop, schedules, model_lib = (Lazy("trainer.data"), Lazy("trainer.distribute"),
                                                Lazy("trainer.loop"), Lazy("trainer.schedules"), Lazy("trainer.model"))


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


def loss_weights(text: str | None, outputs: list[str]) -> dict:
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
    weights = cfg.loss_weights or loss_weights(None, list(model.output_names))
    epoch_lr = ((lambda epoch: schedules.epoch_warmup(epoch, cfg.lr * placement.replicas, cfg.warmup_epochs))
                if cfg.warmup_epochs else None)
    files.makedirs(model_dir)
    if placement.is_chief:  # this folder is a segprep run: only then may --overwrite and the run delete in it
        files.write_text(f"{model_dir}/{run_dir.MARKER}", run_dir.marker_text())
    class_weights = median_frequency(train_split.class_pixels or ()) if cfg.class_weights == "median_frequency" \
        else None
    runner = loop.Loop(loop.Steps(model, optimizer, weights, num_classes, placement, class_weights,
                                  cfg.hard_pixels, train_model), placement,
                       model_dir, save_best=lambda path: saving.save_keras(model, path), epoch_lr=epoch_lr,
                       callbacks=extra_callbacks, verbose=verbose,
                       epoch_begin=_freezer(model, cfg.freeze_backbone_epochs))
    try:
        history = _run(runner, datasets, cfg, steps, val_steps, meta, data_dir)
        path = placement.write_dir(model_dir, run_dir.MODEL)
        saving.save_inference_model(model, path)
        placement.cleanup(path)
        names = [t.name for t in model.inputs]
        servable = all(n == data.IMAGE or not data.is_image_input(n) for n in names)
        if placement.is_chief and servable:  # (a custom model taking the image twice has no one image to serve)
            saving.export_serving(model, f"{model_dir}/{run_dir.SERVING}")
        if placement.is_chief:
            extras = data.extra_inputs(meta, names, data_dir)
            info = run_dir.RunInfo(palette=meta.palette, crop_size=meta.crop_size, model=model.name,
                                   rgb_mean=meta.rgb_mean, rgb_std=meta.rgb_std, data_dir=data_dir,
                                   bands=meta.bands, image_range=meta.image_range,  # predict reads images alike
                                   config=dataclasses.asdict(cfg), strategy=placement.describe(),
                                   inputs=tuple(sorted(names, key=lambda n: (n != data.IMAGE, n))),
                                   extra_inputs={name: {"source": e.source, "channels": e.channels, "dtype": e.dtype,
                                                        "mean": list(e.mean), "std": list(e.std),
                                                        **({"nodata": ["nan" if v != v else v for v in e.nodata]}
                                                           if e.nodata else {})}
                                                 for name, e in extras.items()} or None,
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
        raise UsageError(train_crop_error(size, crop, stride))
    try:
        return size, model_lib.for_training(model, size)
    except ValueError:
        raise UsageError(train_crop_error(size, crop, stride, model.name)) from None


def train_crop_error(size: int, crop: int, stride: int = 8, fixed: str | None = None) -> str:
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
