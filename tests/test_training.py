"""trainer/training.py: fit on shards the real prepare pipeline wrote: logs, saving, class weights, two inputs, windows,
mixed precision, and repeatable runs that a SIGKILL cannot change."""

import csv
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, small_config
from trainer import data, schedules, train, training
from trainer.model import build_model
from trainer.normalization import Normalization


def test_train_crop_size_trains_windows_through_the_models_own_weights_and_saves_it_whole(records, tmp_path,
                                                                                         capsys):
    model = build_model(21, 64, width=8)
    for size in (None, 64):  # whole crops: the model's training twin at its own size
        window, twin = training.train_crops(model, size, 64)
        assert window == 64 and twin.inputs[0].shape[1:3] == (64, 64)
    window, twin = training.train_crops(model, 48, 64)
    assert window == 48 and twin.inputs[0].shape[1:3] == (48, 48)
    assert len(twin.weights) == len(model.weights) and {id(w) for w in twin.weights} == {id(w) for w in model.weights}
    for bad in (60, 72):
        with pytest.raises(train.UsageError, match=f"--train_crop_size {bad}: must be a multiple of 8"):
            training.train_crops(model, bad, 64)
    run = str(tmp_path / "run")
    train.run(["--data_dir", records, "--model_dir", run, "--epochs", "2", "--width", "8", "--train_crop_size", "48"])
    assert "crops, trained as 48×48 windows →" in capsys.readouterr().out
    saved = keras.models.load_model(f"{run}/model.keras")
    assert saved.inputs[0].shape[1:3] == (64, 64)  # whole crops in, as predict and serving use it
    rows = list(csv.DictReader(open(f"{run}/log.csv")))
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])  # the twin's steps trained the saved model's weights
    assert json.load(open(f"{run}/segprep.json"))["config"]["train_crop_size"] == 48
    for size, needle in (("60", "must be a multiple of 8"), ("128", "at most prepare's crop size 64")):
        assert train.main(["--data_dir", records, "--model_dir", str(tmp_path / "r"), "--epochs", "1",
                           "--train_crop_size", size]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_median_frequency_class_weights():
    weights = training.median_frequency([100, 10, 0, 40])  # frequencies 2/3, 1/15, -, 4/15
    assert weights == pytest.approx([0.4, 4.0, 1.0, 1.0])


def test_fit_logs_per_epoch_and_saves_a_loadable_model(records, tmp_path):
    run = str(tmp_path / "run")
    model = build_model(21, 64, width=8)
    training.fit(model, records, run, small_config(warmup_epochs=3), verbose=0)
    rows = list(csv.DictReader(open(f"{run}/log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"main_miou", "upsample_miou", "aux_miou", "val_main_miou", "lr", "loss"} <= set(rows[0])
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [2e-3 / 3, 2 * 2e-3 / 3], rtol=1e-5)
    # Plain Keras in a fresh interpreter that never imported segprep or trainer.
    check = f"import keras; m = keras.models.load_model({run + '/model.keras'!r}); print(sorted(m.output_names))"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith(str(sorted(model.output_names)))
    assert os.path.exists(f"{run}/best.keras")
    # The step schedule (a custom LearningRateSchedule) survives a reload too.
    run2 = str(tmp_path / "run2")
    training.fit(build_model(21, 64, width=8), records, run2, small_config(epochs=1, warmup_steps=3), verbose=0)
    schedule = keras.models.load_model(f"{run2}/best.keras").optimizer._learning_rate
    assert isinstance(schedule, schedules.WarmupCosine) and schedule.warmup_steps == 3


def test_repeat_factors_come_from_class_crops_and_weigh_each_crop_by_its_rarest_class(records):
    factors = training.repeat_factors(100, [100, 1, 0, 10, 40])
    assert factors == pytest.approx([1.0, math.sqrt(10), 1.0, 1.0, 1.0])
    with pytest.raises(data.DataError, match="rerun prepare"):
        training.repeat_factors(100, None)  # a split of shards written before the counts
    meta = data.load_metadata(records)
    split = meta.splits["train"]
    factors = training.repeat_factors(split.records, split.class_crops, threshold=0.9)
    assert max(factors) > 1.0
    ds = data.make_dataset(records, "train", 6, training=True, aug=data.Augment(False, None, 0.0), seed=0,
                           crop_weights=factors)
    seen = 0
    for _, y in ds.take(split.records // 6):
        for mask, weight in zip(y["main"].numpy(), y[data.CROP_WEIGHT].numpy()):
            held = [c for c in np.unique(mask) if c != 255]
            assert weight == pytest.approx(max([1.0] + [factors[c] for c in held]))
            seen += weight > 1.0
    assert seen


def test_a_two_input_model_trains_through_the_same_pipeline(records, tmp_path):
    full = keras.Input((64, 64, 3), name="image")
    half = keras.Input((32, 32, 3), name="image_half")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(full)
    b = keras.layers.UpSampling2D(2)(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(half))
    x = keras.layers.Concatenate()([a, b])
    main = keras.layers.Conv2D(21, 1, name="main")(x)
    coarse = keras.layers.Conv2D(21, 1, name="coarse")(keras.layers.AveragePooling2D(4)(x))
    model = keras.Model({"image": full, "image_half": half}, {"main": main, "coarse": coarse})
    assert data.strides_of(model) == ({"image": 1, "image_half": 2}, {"coarse": 4, "main": 1})
    # A custom model without a normalisation layer: the pipeline normalises for it.
    cfg = small_config(epochs=1, normalization=Normalization("dataset", in_model=False))
    history = training.fit(model, records, str(tmp_path / "run"), cfg, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "val_coarse_miou" in history.history
    info = json.load(open(tmp_path / "run" / "segprep.json"))  # what predict needs, for any model
    assert info["normalization"]["in_model"] is False and not (tmp_path / "run" / "serving").exists()


class _Watch(keras.callbacks.Callback):
    """Keeps the weights and optimizer variables at the start of training and after each epoch."""

    def __init__(self):
        super().__init__()
        self.start, self.after = None, {}

    def _state(self):
        return ([w.copy() for w in self.model.get_weights()],
                [np.array(v.numpy()) for v in self.model.optimizer.variables])

    def on_train_begin(self, logs=None):
        self.start = self._state()

    def on_epoch_end(self, epoch, logs=None):
        self.after[epoch] = self._state()


KILLED_AFTER_EPOCH_1 = """
import os, signal, sys
import numpy as np, keras
from trainer import train, training
from trainer.model import build_model

records, run, snapshots = sys.argv[1:4]


class Snapshot(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # runs after the epoch's backup is written
        np.savez(f"{snapshots}/weights{epoch}.npz", *self.model.get_weights())
        np.savez(f"{snapshots}/optimizer{epoch}.npz", *[np.array(v.numpy()) for v in self.model.optimizer.variables])
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


training.fit(build_model(21, 64, width=8), records, run, train.TrainConfig(epochs=4, batch_size=4, lr=2e-3), verbose=0,
          extra_callbacks=[Snapshot()])
"""


def _arrays(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_killed_run_resumes_weights_optimizer_log_and_best_of_the_whole_run(records, tmp_path):
    """A run SIGKILLed after epoch 1 (a real kill: no finally block, no callback after it), then resumed in this
    process, continues bit for bit from where it stopped."""
    run, snaps = str(tmp_path / "run"), tmp_path / "snapshots"
    snaps.mkdir()
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_EPOCH_1, records, run, str(snaps)],
                            env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert os.path.isdir(f"{run}/backup") and not os.path.exists(f"{run}/model.keras")
    first = {e: (_arrays(snaps / f"weights{e}.npz"), _arrays(snaps / f"optimizer{e}.npz")) for e in (0, 1)}
    # Another model in that dir (an explicit --model_dir reused with other flags): one line, and the backup kept.
    with pytest.raises(train.UsageError, match=r"interrupted run of another model \(segprep_multi, [\d,]+ parameters;"
                                               r" now segprep_multi, [\d,]+ parameters\).*--overwrite") as e:
        training.fit(build_model(21, 64, width=16), records, run, small_config(epochs=4), verbose=0)
    assert "\n" not in str(e.value) and os.path.isdir(f"{run}/backup")
    second = _Watch()
    history = training.fit(build_model(21, 64, width=8), records, run, small_config(epochs=4), verbose=0,
                        extra_callbacks=[second])
    assert history.epoch == [2, 3]
    # A fresh model came back to where the killed one stopped: weights, Adam's moments and its step count.
    weights, optimizer = second.start
    assert _same(weights, first[1][0]) and _same(optimizer, first[1][1])
    assert int(second.model.optimizer.iterations.numpy()) == 4 * data.steps(data.load_metadata(records), "train", 4)
    rows = list(csv.DictReader(open(f"{run}/log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    scores = [float(r["val_main_miou"]) for r in rows]
    assert history.best == pytest.approx(max(scores)) and history.best_epoch == int(np.argmax(scores))
    # best.keras holds the best epoch of the whole run, before or after the resume.
    snapshots = {**first, **second.after}
    assert _same(keras.models.load_model(f"{run}/best.keras").get_weights(), snapshots[history.best_epoch][0])
    assert not os.path.exists(f"{run}/backup")


def test_mixed_precision_on_cpu_trains_in_bfloat16_and_saves_a_float32_model(records, tmp_path, capsys):
    run = tmp_path / "run"
    history = train.run(["--data_dir", records, "--model_dir", str(run), "--epochs", "1", "--batch_size", "4",
                         "--width", "8", "--mixed_precision"])
    assert "mixed_bfloat16" in capsys.readouterr().out.splitlines()[0]
    assert np.isfinite(history.history["loss"][0])
    assert keras.mixed_precision.global_policy().name == "float32"  # the run's policy does not leak
    model = keras.models.load_model(run / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    probs = model.predict_on_batch({"image": np.zeros((1, 64, 64, 3), np.float32)})
    assert all(v.dtype == np.float32 for v in probs.values())


def test_clear_errors(records, tmp_path):
    os.rename(f"{records}/metadata.json", f"{records}/m.json")
    with pytest.raises(data.DataError, match="did not finish"):
        data.load_metadata(records)
    os.rename(f"{records}/m.json", f"{records}/metadata.json")
    meta = data.load_metadata(records)
    shard = f"{records}/{meta.splits['train'].shards[0]}"
    raw = open(shard, "rb").read()
    open(shard, "wb").write(raw[:100] + b"\x00" * 50 + raw[150:])
    with pytest.raises(data.DataError, match="damaged shard .*train-00000.*record 0"):
        training.fit(build_model(21, 64, width=8), records, str(tmp_path / "r"), small_config(epochs=1), verbose=0)
    os.remove(shard)
    with pytest.raises(data.DataError, match="not there"):
        data.make_dataset(records, "train", 2, training=True)
    with pytest.raises(train.UsageError, match="classes"):
        training.fit(build_model(5, 64, width=8), records, str(tmp_path / "r2"), small_config(), verbose=0)
    assert train.main(["--data_dir", str(tmp_path / "nothing")]) == 2
    for bad in ("main=-1", "main=nan", "main=0,upsample=0,aux=0", "main=x"):
        with pytest.raises(train.UsageError, match="--loss_weights"):
            training.loss_weights(bad, ["main", "upsample", "aux"])


def test_the_same_command_trains_the_same_model_and_a_sigkilled_run_resumes_into_it(records, tmp_path):
    """Repeatable training: one command run twice, once uninterrupted here and once in another process with a real
    SIGKILL (no finally, no callback) after epoch 1's backup and then run again, writes the same log.csv and the
    same weights (the resumed epochs read the data, augmentation included, the uninterrupted run read); another
    seed does not."""
    import signal
    import time

    def args(run, seed=0):
        return ["--data_dir", records, "--model_dir", str(run), "--epochs", "3", "--batch_size", "4", "--width", "8",
                "--seed", str(seed)]

    def result(run):
        return open(os.path.join(run, "log.csv")).read(), keras.models.load_model(f"{run}/model.keras").get_weights()

    for name, seed in (("once", 0), ("other", 1)):
        train.run(args(tmp_path / name, seed))
    once, other = (result(tmp_path / name) for name in ("once", "other"))
    assert once[0] != other[0] and not _same(once[1], other[1])

    run = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "trainer.train"] + args(run)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(run, "backup", "state.json")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(state) and json.load(open(state))["epoch"] >= 0:  # written whole, last in an epoch
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.load(open(state))["epoch"]
    assert done in (0, 1) and not os.path.exists(os.path.join(run, "model.keras"))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"train: resuming from epoch {done + 2} of 3" in again.stdout
    assert [int(r["epoch"]) for r in csv.DictReader(open(os.path.join(run, "log.csv")))] == [0, 1, 2]
    assert os.path.exists(os.path.join(run, "model.keras")) and not os.path.exists(os.path.join(run, "backup"))
    # The same command, in another process, killed and resumed: the uninterrupted run's log and weights.
    resumed = result(run)
    assert resumed[0] == once[0] and _same(resumed[1], once[1])


def test_an_op_without_a_deterministic_kernel_points_to_the_flag():
    # TensorFlow's own words when a GPU op has no deterministic kernel under op determinism.
    gpu = tf.errors.UnimplementedError(None, None, "Deterministic GPU implementation of unsorted segment reduction "
                                                   "op not available.")
    usage = training.no_deterministic_kernel(gpu)
    assert isinstance(usage, train.UsageError) and "\n" not in str(usage)
    assert str(usage).startswith("Deterministic GPU implementation of unsorted segment reduction op not available.")
    assert "--no_op_determinism" in str(usage)
    assert training.no_deterministic_kernel(tf.errors.UnimplementedError(None, None, "Conv3D on int8")) is None
