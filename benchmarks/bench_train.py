"""(d) Trainer input pipeline vs the seed recipe's loader, (e) vs the model's training step, (f) default training.

  (d) examples/s of trainer.data.make_dataset (train split, random flips only) vs the seed recipe's two
      `ImageDataGenerator.flow_from_directory` generators (image and mask folders, same seed, zipped, same
      flips) over the same crops written as files: like for like. Beside it, the rate with trainer.train's
      default augmentation (flips, scale, rotation: a bilinear and a nearest warp per crop), which the seed
      loader does not do. No goal of its own: both decode a JPEG and a PNG per crop, which bounds the ratio
      (1203 examples/s flips-only on 2 cores is 1.7 ms of a core per crop); the goal that matters is (e).
  (e) the same input pipeline vs the default model's training rate fed from one cached batch (no input cost).
      Goal ≥ 2×: training is never input-bound. Beside it, the same step as plain Keras and TensorFlow compute
      it (see `train_rate`), measured in the same run: what trainer.loop's step gains over them.
  (f) val mIoU of the default `python -m trainer.train` on the bundled sample for each of --seed 0-4, measured
      with `trainer.evaluate` on model.keras, with each training's wall time, side by side, then min, median and
      max. Goal: ≥ 0.8 for every seed, each within 10 minutes on 2 cores. Training is repeatable (the same seed
      gives the same log.csv), so each figure is the recipe's, not a draw. SEEDS=0,3 runs some of them;
      TRAIN_FLAGS="--hard_pixels 1 --epochs 12" measures another recipe the same way.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8


def _sample_records(tmp):
    out = os.path.join(tmp, "records")
    subprocess.run([sys.executable, "-m", "pipelines.prepare", "--output_dir", out, "--runner=DirectRunner"],
                   check=True, cwd=REPO, capture_output=True, env=dict(os.environ, PYTHONPATH=REPO))
    return out


def _rate(iterator, batches):
    next(iterator)  # warm-up: graph building, first file opens
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(iterator)
        n += len(x["image"]) if isinstance(x, dict) else len(x)
    return n / (time.perf_counter() - t)


def input_rates(records, tmp):
    import tensorflow as tf

    from trainer import data

    # uint8, as trainer.train feeds its self-normalising model
    targets = {"main": 1, "upsample": 1, "aux": 8}
    flips = _rate(iter(data.make_dataset(records, "train", BATCH, training=True, targets=targets,
                                         aug=data.Augment(scale=None, rotate_degrees=0))), 60)
    ours = _rate(iter(data.make_dataset(records, "train", BATCH, training=True, targets=targets)), 60)
    # The same crops as files, for the seed recipe's loader.
    img_dir, mask_dir = os.path.join(tmp, "files", "images"), os.path.join(tmp, "files", "masks")
    os.makedirs(img_dir)
    os.makedirs(mask_dir)
    meta = data.load_metadata(records)
    for i, (image, mask) in enumerate(tf.data.TFRecordDataset(data.split_files(meta, records, "train"))
                                      .map(lambda r: data.decode(r, meta.crop_size))):
        tf.io.write_file(os.path.join(img_dir, f"{i:05d}.jpg"), tf.io.encode_jpeg(image, quality=95))
        tf.io.write_file(os.path.join(mask_dir, f"{i:05d}.png"), tf.io.encode_png(mask))
    gen = tf.keras.preprocessing.image.ImageDataGenerator
    size = (meta.crop_size, meta.crop_size)
    images = gen(horizontal_flip=True).flow_from_directory(os.path.join(tmp, "files"), classes=["images"],
                                                           class_mode=None, target_size=size, batch_size=BATCH,
                                                           seed=1)
    masks = gen(horizontal_flip=True).flow_from_directory(os.path.join(tmp, "files"), classes=["masks"],
                                                          class_mode=None, color_mode="grayscale",
                                                          target_size=size, batch_size=BATCH, seed=1)
    seed_recipe = _rate(zip(images, masks), 60)
    return flips, seed_recipe, ours


def train_rate(records, plain: bool = False):
    """Examples/s of the training step trainer.train runs (trainer.loop), fed one cached batch. `plain`: the same
    step as Keras and TensorFlow give it, for comparison: Keras's BatchNormalization layers (moments and
    normalisation as separate ops), TensorFlow's sparse cross-entropy (under op determinism: a log-softmax and a
    gather) and `top_k` for the hard-pixel threshold."""
    import keras
    import tensorflow as tf

    from trainer import data, distribute, loop
    from trainer.model import build_model, for_training
    from trainer.train import TrainConfig, op_determinism

    meta = data.load_metadata(records)
    placement = distribute.make("auto")
    keras.utils.set_random_seed(0)
    model = build_model(meta.num_classes, meta.crop_size)
    inputs, targets = data.strides_of(model)
    one = data.make_dataset(records, "train", BATCH, training=True, inputs=inputs, targets=targets).take(1).cache()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    steps = loop.Steps(model, optimizer, {"main": 1.0, "upsample": 0.2, "aux": 0.2}, meta.num_classes, placement,
                       hard_pixels=TrainConfig.hard_pixels, train_model=None if plain else for_training(model))
    ours = loop.cross_entropy, loop.kth_largest
    if plain:  # the step is traced below, with these
        loop.cross_entropy = lambda labels, logits: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        loop.kth_largest = lambda values, k: tf.reduce_min(tf.math.top_k(values, k, sorted=False).values)
    batches = iter(one.repeat())
    try:
        with op_determinism(True):  # as trainer.train runs
            for _ in range(3):  # build and trace
                steps.train(*next(batches))
            count = 20
            t = time.perf_counter()
            for _ in range(count):
                logs, _ = steps.train(*next(batches))
            float(logs["loss"])
    finally:
        loop.cross_entropy, loop.kth_largest = ours
    return count * BATCH / (time.perf_counter() - t)


def default_training(work: str, seed: int, flags=()):
    """The README's train and evaluate commands as a user runs them, in `work` (where prepare's defaults wrote
    data/records), with `--seed seed` and `flags`: → (mIoU of `trainer.evaluate` on model.keras, the final model,
    not the best epoch's; best val mIoU while training; training seconds)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    model_dir = os.path.join(work, "runs", f"seed{seed}")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--seed", str(seed), "--model_dir", model_dir,
                           *flags], cwd=work, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    best = float(re.search(r"best val mIoU \(main\) ([0-9.]+)", proc.stdout).group(1))
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", model_dir], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    final = float(re.search(r"^mIoU\s+([0-9.]+)", proc.stdout, re.M).group(1))
    return final, best, secs


def seeds_table(tmp: str, seeds=(0, 1, 2, 3, 4), flags=()) -> None:
    import statistics

    work = os.path.join(tmp, "work")
    os.makedirs(work)
    subprocess.run([sys.executable, "-m", "pipelines.prepare", "--runner=DirectRunner"], cwd=work, check=True,
                   env=dict(os.environ, PYTHONPATH=REPO), capture_output=True)
    command = " ".join(["python -m trainer.train --seed S", *flags])
    print(f"(f) {'default ' if not flags else ''}`{command}` on the sample, `trainer.evaluate` on model.keras "
          "(goal: ≥ 0.8 for every seed, each within 10 min on 2 cores)")
    print(f"{'seed':>6} {'val mIoU':>9} {'best epoch':>11} {'train min':>10}")
    finals, times = [], []
    for seed in seeds:
        final, best, secs = default_training(work, seed, flags)
        finals.append(final)
        times.append(secs / 60)
        print(f"{seed:>6} {final:>9.3f} {best:>11.3f} {secs / 60:>10.1f}", flush=True)
    print(f"{'min':>6} {min(finals):>9.3f} {'':>11} {min(times):>10.1f}")
    print(f"{'median':>6} {statistics.median(finals):>9.3f} {'':>11} {statistics.median(times):>10.1f}")
    print(f"{'max':>6} {max(finals):>9.3f} {'':>11} {max(times):>10.1f}")


def main(which=("input", "train")):
    with tempfile.TemporaryDirectory() as tmp:
        records = _sample_records(tmp)
        flips, seed, ours = input_rates(records, tmp)
        print(f"(d) input pipeline, flips only: tf.data from shards {flips:.0f} examples/s, seed recipe's zipped "
              f"ImageDataGenerator.flow_from_directory {seed:.0f} examples/s → {flips / seed:.1f}×; "
              f"with trainer.train's scale and rotation too: {ours:.0f} examples/s")
        plain, step = train_rate(records, plain=True), train_rate(records)
        print(f"(e) training step (default model, batch {BATCH}, cached input): {step:.1f} examples/s; input "
              f"pipeline / training = {ours / step:.1f}× (goal ≥ 2×). The same step with Keras's BatchNorm, "
              f"TensorFlow's cross-entropy and top_k: {plain:.1f} examples/s (trainer's {step / plain:.2f}×)")
        if "train" in which:
            seeds = tuple(int(v) for v in os.environ.get("SEEDS", "0,1,2,3,4").split(","))
            seeds_table(tmp, seeds, shlex.split(os.environ.get("TRAIN_FLAGS", "")))


if __name__ == "__main__":
    main()
