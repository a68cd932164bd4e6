"""The training loop: one custom loop for every distribution strategy, doing what Keras's callbacks did.

Why not `model.fit`: under MultiWorkerMirroredStrategy Keras 3's fit fails (keras-team/keras#20585), and its
callbacks do not survive a GCS run dir or a resume (CSVLogger appends through a GFile it cannot close;
ModelCheckpoint forgets the best value on resume). One loop — `strategy.run` over a distributed dataset — serves
the default strategy, one device, mirrored GPUs, several workers and TPUs alike, with one set of duties:

- **loss**: per output, sparse cross-entropy (optionally class-weighted) over the labelled pixels (255 ignored) of
  the *global* batch — each replica divides its sum by the all-reduced pixel count, and the optimizer sums
  gradients across replicas — so a step is the same on 1 or N replicas for the same global batch; outputs weighted
  by `loss_weights`. With `hard_pixels` < 1 a training step keeps only the hardest share of each output's pixels on
  each replica (online hard example mining, DeepLab's `top_k_percent_pixels`); evaluation uses them all;
- **metrics**: a confusion matrix per output and step, summed across replicas; mIoU as Keras's `MeanIoU` computes
  it (classes with a non-empty union);
- **run dir** (the chief only): log.csv rewritten whole each epoch (so it works on gs://), TensorBoard scalars,
  best.keras when `val_main_miou` beats the best of the *whole* run (kept across resumes), backup/ (a
  `tf.train.Checkpoint` of model and optimizer plus state.json) after every epoch, removed at the end.

A killed run resumes from its last finished epoch: weights, optimizer state (step count, moments, so the LR
schedule goes on where it was), the best value and the log all come back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time

import keras
import numpy as np
import tensorflow as tf

from segprep.cli import UsageError
from segprep.formats import run_dir
from segprep.palette import IGNORE_LABEL
from trainer import common
from trainer.common import CROP_WEIGHT, files
from trainer.distribute import Placement

from trainer.common import BEST_METRIC  # noqa: E402,F401 - re-exported


@dataclasses.dataclass
class History:
    """What `fit` returns, shaped like Keras's History: the epochs run now and their logs."""

    epoch: list[int] = dataclasses.field(default_factory=list)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    best: float = -math.inf  # best val_main_miou of the whole run, resumes included
    best_epoch: int = -1


@dataclasses.dataclass
class RunState:
    """What backup/state.json holds: the last finished epoch, the best so far, every row of the log, and which
    model the checkpoint is of (`model_key`; empty in backups written before it was recorded)."""

    epoch: int = -1
    best: float = -math.inf
    best_epoch: int = -1
    rows: list[dict] = dataclasses.field(default_factory=list)
    model: str = ""  # name and parameter count, for the message
    model_key: str = ""

    @classmethod
    def load(cls, path: str) -> RunState | None:
        if not files.exists(path):
            return None
        return cls(**json.loads(files.read_bytes(path)))

    def save(self, path: str) -> None:
        files.write_text(path, json.dumps(dataclasses.asdict(self)))


class Steps:
    """The distributed train and eval steps for one model, optimizer and set of outputs. With `train_model` (the
    model's own layers on another input size), training steps call it and evaluation steps `model`."""

    def __init__(self, model: keras.Model, optimizer, loss_weights: dict[str, float], num_classes: int,
                 placement: Placement, class_weights=None, hard_pixels: float = 1.0,
                 train_model: keras.Model | None = None):
        if not 0 < hard_pixels <= 1:
            raise ValueError(f"Argument `hard_pixels` must be in (0, 1]. Received: hard_pixels={hard_pixels}")
        self.model, self.optimizer = model, optimizer
        # What training steps call: `model` itself, or its layers on smaller crops (trainer.model.at_size).
        self.train_model = model if train_model is None else train_model
        self.hard_pixels = float(hard_pixels)
        self.outputs = list(model.output_names)
        self.weights = {k: float(loss_weights.get(k, 0.0)) for k in self.outputs}
        self.num_classes = num_classes
        self.class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
        self.strategy = placement.strategy
        self._scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.retrace()
        if placement.workers > 1:  # each worker evaluates the whole split itself: exact, and no collectives
            self.eval = tf.function(self._eval_step)
        else:
            self.eval = tf.function(self._distributed(self._eval_step))

    def retrace(self) -> None:
        """A new train step: for a model whose trainable weights changed (a frozen backbone thawed)."""
        self.train = tf.function(self._distributed(self._train_step))

    def _distributed(self, step):
        def run(x, y):
            values = self.strategy.run(step, args=(x, y))
            return tf.nest.map_structure(lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None),
                                         values)
        return run

    def _losses(self, y: dict, out: dict, training: bool = False) -> dict:
        """Per output: this replica's share of the global batch's mean over labelled pixels (in training, over
        those among the hardest `hard_pixels` share of all pixels)."""
        ctx = tf.distribute.get_replica_context()  # None outside strategy.run (multi-worker evaluation)
        losses = {}
        for name in self.outputs:
            labels = tf.cast(y[name][..., 0], tf.int32)
            valid = tf.not_equal(labels, IGNORE_LABEL)
            labels = tf.where(valid, labels, 0)
            per_pixel = cross_entropy(labels, tf.cast(out[name], tf.float32))
            if self.class_weights is not None:
                per_pixel *= tf.gather(self.class_weights, labels)
            if training and self.hard_pixels < 1:
                valid = tf.logical_and(valid, per_pixel >= _hardest(per_pixel, valid, self.hard_pixels))
            weight = tf.cast(valid, tf.float32)
            if CROP_WEIGHT in y:  # a crop of weight r counts as r copies of it: numerator and denominator
                weight *= tf.reshape(y[CROP_WEIGHT], [-1] + [1] * (weight.shape.rank - 1))
            total = tf.reduce_sum(tf.where(valid, per_pixel * weight, 0.0))
            count = tf.reduce_sum(weight)
            if ctx is not None:
                count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
            losses[name] = total / tf.maximum(count, 1.0)
        return losses

    def _confusion(self, y: dict, out: dict) -> dict:
        return {name: confusion(y[name], out[name], self.num_classes) for name in self.outputs}

    def _logs(self, losses: dict, total) -> dict:
        logs = {"loss": total}
        logs.update({f"{k}_loss": v for k, v in losses.items()})
        return logs

    def _train_step(self, x, y):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            out = self.train_model(x, training=True)
            losses = self._losses(y, out, training=True)
            total = tf.add_n([self.weights[k] * v for k, v in losses.items()])
            if self.model.losses:  # regularisers: each replica adds its share
                total += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total) if self._scaled else total
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._logs(losses, total), self._confusion(y, out)

    def _eval_step(self, x, y):
        out = self.model(x, training=False)
        losses = self._losses(y, out)
        total = tf.add_n([self.weights[k] * v for k, v in losses.items()])
        return self._logs(losses, total), self._confusion(y, out)


def cross_entropy(labels, logits):
    """`tf.nn.sparse_softmax_cross_entropy_with_logits` (labels in [0, classes), shape [..., classes] logits) with its
    gradient written out as softmax − one-hot. Under op determinism TensorFlow computes it from a log-softmax and a
    gather whose gradient goes through UnsortedSegmentSum and a dozen passes over the logits, a quarter of a
    training step of the default model on CPU; this is three passes forward and two back, as deterministic on
    every device, equal to it within float32 rounding (values 2e-6, gradients 1e-5)."""
    classes = logits.shape[-1]

    @tf.custom_gradient
    def loss(logits):
        top = tf.reduce_max(logits, axis=-1, keepdims=True)
        exp = tf.exp(logits - top)
        total = tf.reduce_sum(exp, axis=-1)
        picked = tf.gather(logits, labels[..., None], batch_dims=labels.shape.rank)[..., 0]
        value = tf.math.log(total) + top[..., 0] - picked

        def grad(upstream):
            hot = tf.one_hot(labels, classes, dtype=logits.dtype)
            return (exp / total[..., None] - hot) * upstream[..., None]

        return value, grad

    return loss(logits)


def _hardest(per_pixel, valid, share: float):
    """The loss value at which the hardest `share` of the batch's pixels begins: a threshold, not a gather, so the
    gradient stays dense and deterministic. As DeepLab's top_k_percent_pixels, the share is of every pixel, so k is
    static where the shape is (XLA and TPUs need that); unlabelled pixels, set to -1 below any cross-entropy, rank
    last, and when fewer than k are labelled every labelled pixel is kept."""
    flat = tf.reshape(tf.where(valid, per_pixel, -1.0), [-1])
    size = flat.shape[0]
    k = max(1, math.ceil(share * size)) if size is not None else tf.maximum(
        1, tf.cast(tf.math.ceil(share * tf.cast(tf.size(flat), tf.float32)), tf.int32))
    return tf.stop_gradient(kth_largest(flat, k))


def kth_largest(values, k):
    """The k-th largest of a 1-D float32 tensor (k ≥ 1, at most its size), exactly `min(top_k(values, k))`, found by
    bisection on the values' bit patterns: 32 passes that count how many values lie above a candidate. A top_k over
    the half million losses of a batch of 256² crops costs ~2.5× as much on CPU (it selects and moves values; the
    passes only compare and add), and the counts are integers, so the result is the same on every device."""
    bits = tf.bitcast(values, tf.int32)
    # Integer order = float order: negative floats' bit patterns count down as the value goes down, so flip them.
    keys = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits)

    def narrow(low, high):  # invariant: at least k keys ≥ low, fewer than k keys > high
        mid = low + (high - low + 1) // 2
        enough = tf.reduce_sum(tf.cast(keys >= tf.cast(mid, tf.int32), tf.int32)) >= k
        return tf.where(enough, mid, low), tf.where(enough, high, mid - 1)

    low, _ = tf.while_loop(lambda low, high: low < high, narrow,
                           (tf.constant(-2 ** 31, tf.int64), tf.constant(2 ** 31 - 1, tf.int64)),
                           maximum_iterations=32)
    key = tf.cast(low, tf.int32)
    return tf.bitcast(tf.where(key < 0, tf.bitwise.bitwise_xor(key, 0x7FFFFFFF), key), tf.float32)


class _Epoch:
    """Running sums over the steps of one pass: mean losses, summed confusion matrices."""

    def __init__(self, outputs, num_classes):
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.cms = {k: np.zeros((num_classes, num_classes), np.int64) for k in outputs}

    def add(self, logs: dict, cms: dict) -> None:
        self.steps += 1
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        for k, v in cms.items():
            self.cms[k] += v.numpy()

    def logs(self, prefix: str = "") -> dict:
        out = {prefix + k: v / max(self.steps, 1) for k, v in self.sums.items()}
        out.update({f"{prefix}{k}_miou": common.miou(cm) for k, cm in self.cms.items()})
        return out


def model_identity(model: keras.Model) -> tuple[str, str]:
    """(name and parameter count, a key of its weights' kinds and shapes, in order): what a checkpoint must be of
    to be restored into `model`. Not the weights' paths: Keras numbers its layers' names per process."""
    layout = json.dumps([(w.name, list(w.shape)) for w in model.weights])
    return f"{model.name}, {model.count_params():,} parameters", hashlib.sha1(layout.encode()).hexdigest()


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


class Loop:
    """Runs epochs of `steps` over distributed datasets and keeps the run dir (see the module docstring)."""

    def __init__(self, steps: Steps, placement: Placement, model_dir: str, *, save_best, epoch_lr=None,
                 callbacks: list | None = None, verbose: int = 2, epoch_begin=None):
        self.steps, self.placement, self.model_dir = steps, placement, model_dir
        self.save_best = save_best  # (path) → writes best.keras
        self.epoch_lr = epoch_lr  # (epoch) → lr, for per-epoch schedules
        self.epoch_begin = epoch_begin  # (epoch) → True when the model's trainable weights changed (a new step)
        self.callbacks = keras.callbacks.CallbackList(callbacks or [], model=steps.model)
        self.verbose = verbose
        self.backup = placement.write_dir(model_dir, run_dir.BACKUP)
        self.checkpoint = tf.train.Checkpoint(model=steps.model, optimizer=steps.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.backup, max_to_keep=1)
        self._writers = None

    def restore(self) -> RunState:
        """The state of an interrupted run from the chief's backup/ (every worker reads it; weights and optimizer
        restored), or a fresh one."""
        state = RunState.load(f"{self.model_dir}/{run_dir.STATE}")
        latest = tf.train.latest_checkpoint(f"{self.model_dir}/backup")
        model, key = model_identity(self.steps.model)
        if state is None or latest is None:
            return RunState(model=model, model_key=key)
        if state.model_key and state.model_key != key:
            # Restoring would fill the matching weights and silently leave the others as initialised.
            raise UsageError(f"{self.model_dir} holds an interrupted run of another model ({state.model}; now "
                             f"{model}): run the command that started it to resume, or pass --overwrite to start "
                             "over.")
        self.checkpoint.restore(latest).expect_partial()
        state.model, state.model_key = model, key
        return state

    def fit(self, train_ds, val_ds, epochs: int, steps_per_epoch: int, val_steps: int) -> History:
        """`train_ds`: the training batches from epoch 0 on, or a function of the first epoch to run (see
        trainer.data.make_dataset) → them, so that a resumed run reads what an uninterrupted one would have."""
        strategy = self.steps.strategy
        state = self.restore()
        if callable(train_ds):
            train_ds = train_ds(state.epoch + 1)
        train_iter = iter(strategy.experimental_distribute_dataset(train_ds))
        val_iter = iter(val_ds if self.placement.workers > 1 else strategy.experimental_distribute_dataset(val_ds))
        if state.epoch >= 0 and self.verbose and self.placement.is_chief:
            print(f"train: resuming from epoch {state.epoch + 2} of {epochs} (epochs 1-{state.epoch + 1} came back "
                  f"from {self.model_dir}/backup; best val mIoU so far {state.best:.3f})", flush=True)
        history = History()
        self.callbacks.on_train_begin()
        for epoch in range(state.epoch + 1, epochs):
            started = time.time()
            self.callbacks.on_epoch_begin(epoch)
            if self.epoch_lr is not None:
                self.steps.optimizer.learning_rate.assign(self.epoch_lr(epoch))
            if self.epoch_begin is not None and self.epoch_begin(epoch):
                self.steps.retrace()
            bar = keras.utils.Progbar(steps_per_epoch, verbose=1) if self.verbose == 1 else None
            seen = _Epoch(self.steps.outputs, self.steps.num_classes)
            for i in range(steps_per_epoch):
                seen.add(*self.steps.train(*next(train_iter)))
                if bar is not None:
                    bar.update(i + 1, [("loss", seen.sums["loss"] / seen.steps)])
            val = _Epoch(self.steps.outputs, self.steps.num_classes)
            for _ in range(val_steps):
                val.add(*self.steps.eval(*next(val_iter)))
            logs = {**seen.logs(), **val.logs("val_"), "lr": current_lr(self.steps.optimizer)}
            self._end_epoch(epoch, logs, state)
            for k, v in logs.items():
                history.history.setdefault(k, []).append(v)
            history.epoch.append(epoch)
            if self.verbose:
                shown = " - ".join(f"{k} {v:.4g}" for k, v in logs.items()
                                   if k in ("loss", "val_loss", "lr") or k.endswith("main_miou"))
                print(f"epoch {epoch + 1}/{epochs} - {time.time() - started:.0f} s - {shown}", flush=True)
            self.callbacks.on_epoch_end(epoch, logs)
        self.callbacks.on_train_end()
        history.best, history.best_epoch = state.best, state.best_epoch
        return history

    def _end_epoch(self, epoch: int, logs: dict, state: RunState) -> None:
        """The run dir after an epoch: log.csv, TensorBoard, best.keras, then backup/ (last: a kill before it
        repeats this epoch, never skips it)."""
        state.rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        improved = logs.get(BEST_METRIC, -math.inf) > state.best
        if improved:
            state.best, state.best_epoch = float(logs[BEST_METRIC]), epoch
        if self.placement.is_chief:
            _write_csv(f"{self.model_dir}/{run_dir.LOG}", state.rows)
            self._tensorboard(epoch, logs)
        if improved:  # every worker saves (collectives may be involved); only the chief's copy stays
            path = self.placement.write_dir(self.model_dir, run_dir.BEST)
            self.save_best(path)
            self.placement.cleanup(path)
        state.epoch = epoch
        self.manager.save(checkpoint_number=epoch)
        if self.placement.is_chief:
            state.save(f"{self.backup}/{run_dir.STATE_NAME}")

    def _tensorboard(self, epoch: int, logs: dict) -> None:
        if self._writers is None:
            self._writers = {part: tf.summary.create_file_writer(f"{self.model_dir}/{run_dir.TENSORBOARD}/{part}")
                             for part in ("train", "validation")}
        for part, writer in self._writers.items():
            with writer.as_default(step=epoch):
                for k, v in logs.items():
                    if (part == "validation") == k.startswith("val_"):
                        tf.summary.scalar("epoch_" + k.removeprefix("val_"), v)
            writer.flush()

    def finish(self) -> None:
        """Removes backup/ (the run is complete)."""
        if self._writers:
            for writer in self._writers.values():
                writer.close()
        if files.exists(self.backup):
            files.rmtree(self.backup)
        self.placement.cleanup(self.backup)


def confusion(labels, logits, num_classes: int):
    """(C, C) int32 confusion matrix (rows = truth) of a batch: `labels` class ids (any shape, 255 and any value
    ≥ C not counted), `logits` the same shape plus a class axis. The one definition the training loop's metrics and
    trainer.evaluate share."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    pred = tf.reshape(tf.argmax(logits, -1, output_type=tf.int32), [-1])
    keep = labels < num_classes
    return tf.math.confusion_matrix(tf.boolean_mask(labels, keep), tf.boolean_mask(pred, keep), num_classes,
                                    dtype=tf.int32)


def _write_csv(path: str, rows: list[dict]) -> None:
    """The whole log, rewritten: object stores cannot append, and a resumed run must not repeat rows."""
    keys = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
    lines = [",".join(keys)] + [",".join(_fmt(r.get(k, "")) for k in keys) for r in rows]
    files.write_text(path, "\n".join(lines) + "\n")


def _fmt(value) -> str:
    return str(value) if isinstance(value, (int, str)) else repr(float(value))
