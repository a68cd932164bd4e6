"""The trainer on shards written by the real prepare pipeline: input pipeline, warm-up, fit, resume, predict."""

import csv
import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, read_records, shard_files
from pipelines import prepare
from segprep import codec, headers, layout
from segprep.formats import run_dir
from segprep.palette import VOC
from trainer import data, evaluate, predict, run_folders, schedules, train, training
from trainer.model import build_model
from trainer.normalization import Normalization


def test_input_pipeline_shapes_dtypes_and_values(records):
    meta = data.load_metadata(records)
    # Flips only: the crops stay uint8 (scaling and rotation resample the image in float32).
    ds = data.make_dataset(records, "train", 4, training=True, targets={"main": 1, "aux": 8}, seed=0,
                           aug=data.Augment(scale=None, rotate_degrees=0))
    for x, y in ds.take(3):
        assert set(x) == {"image"} and set(y) == {"main", "aux"}
        assert x["image"].shape == (4, 64, 64, 3) and x["image"].dtype == tf.uint8  # the model normalises
        assert y["main"].shape == (4, 64, 64, 1) and y["main"].dtype == tf.uint8
        assert y["aux"].shape == (4, 8, 8, 1)
        values = set(np.unique(y["main"].numpy()))
        assert values <= set(range(meta.num_classes)) | {255} and values & {1, 4, 15}
        np.testing.assert_array_equal(y["aux"].numpy(), y["main"].numpy()[:, 4::8, 4::8])  # nearest, not blended
    # Normalised with the training crops' statistics from metadata.json, in record order for evaluation.
    x = np.concatenate([b[0]["image"].numpy() for b in data.make_dataset(records, "val", 2, training=False,
                                                                         normalize=(meta.rgb_mean, meta.rgb_std))
                        .take(data.steps(meta, "val", 2))])
    decoded = np.stack([r["image"] for r in read_records(shard_files(records, "val"))]).astype(np.float32)
    np.testing.assert_allclose(x, (decoded - meta.rgb_mean) / np.array(meta.rgb_std), rtol=1e-5, atol=1e-5)
    assert 100 < meta.rgb_mean[0] < 200  # the fixture's images, not a default


def test_steps_come_from_metadata_and_validation_is_one_exact_pass(records):
    meta = data.load_metadata(records)
    n = meta.splits["val"].records
    assert data.steps(meta, "val", 2) == math.ceil(n / 2)
    ds = data.make_dataset(records, "val", 2, training=False)
    seen = sum(int(b[0]["image"].shape[0]) for b in ds.take(data.steps(meta, "val", 2)))
    assert seen == n
    again = [b[1]["main"].numpy() for b in ds.take(2 * data.steps(meta, "val", 2))]
    first, second = again[: len(again) // 2], again[len(again) // 2:]
    assert all((a == b).all() for a, b in zip(first, second))  # deterministic and aligned pass after pass


def test_paired_augmentation_keeps_image_and_mask_aligned():
    # Image channel 0 = 10 × class, in 16-px blocks, so every mask pixel says what its image pixel must be.
    classes = np.kron(np.arange(16).reshape(4, 4) % 5, np.ones((16, 16), np.uint8)).astype(np.uint8)
    image = np.repeat((classes * 10)[..., None], 3, -1).astype(np.uint8)
    aug = data.Augment(flip=True, scale=(0.7, 1.4), rotate_degrees=30)
    tf.random.set_seed(1)
    for _ in range(10):
        img, mask = data.augment(tf.constant(image), tf.constant(classes[..., None]), aug, 64)
        img, mask = np.asarray(img)[..., 0], np.asarray(mask)[..., 0]
        assert set(np.unique(mask)) <= set(np.unique(classes)) | {255}  # nearest only: no invented classes
        valid = mask != 255
        # Away from block edges (where bilinear blends), the image value is 10 × the mask's class.
        agree = np.abs(img[valid] - 10.0 * mask[valid]) < 1.0
        assert agree.mean() > 0.8


def test_training_windows_are_parts_of_the_augmented_crop_at_one_offset_for_image_and_mask(records):
    """--train_crop_size: a training crop is a random window of what the whole crop's augmentation gives (flips,
    scale, rotation), cut at one corner for image and mask, drawn from the crop's own key; evaluation stays whole."""
    size, window = 64, 40
    rows, cols = np.mgrid[:size, :size]
    image = np.stack([cols * 4, rows * 4, np.full_like(rows, 9)], -1).astype(np.uint8)  # each pixel names its place
    classes = ((rows // 16 + cols // 16) % 5).astype(np.uint8)[..., None]
    corners = set()
    for aug in (data.Augment(scale=None, rotate_degrees=0), data.Augment(scale=(0.7, 1.4), rotate_degrees=30)):
        for k in range(8):
            key = tf.constant([7, k], tf.int64)
            whole_image, whole_mask = (np.asarray(t) for t in data.augment(image, classes, aug, size, key))
            part_image, part_mask = (np.asarray(t) for t in data.augment(image, classes, aug, size, key, window))
            assert part_image.shape == (window, window, 3) and part_mask.shape == (window, window, 1)
            gap = {(r, c): np.abs(part_image.astype(np.float32) - whole_image[r:r + window, c:c + window]).max()
                   for r in range(size - window + 1) for c in range(size - window + 1)}
            (r, c), best = min(gap.items(), key=lambda item: item[1])
            assert best < 0.01, best  # the same pixels (the warp computes only the window's)
            agree = (part_mask == whole_mask[r:r + window, c:c + window]).mean()
            assert agree == 1.0 if aug.scale is None else agree > 0.999
            corners.add((r, c))
            again = data.augment(image, classes, aug, size, key, window)
            assert all(np.array_equal(a, b) for a, b in zip(again, (part_image, part_mask)))  # a pure function
    assert len(corners) >= 6 and max(max(rc) for rc in corners) > size - window - 8  # drawn, across the range
    # Through the pipeline: training batches are windows with their targets cut alike, validation whole crops.
    ds = data.make_dataset(records, "train", 4, training=True, targets={"main": 1, "aux": 8}, window=48)
    x, y = next(iter(ds))
    assert x["image"].shape == (4, 48, 48, 3) and y["main"].shape == (4, 48, 48, 1) and y["aux"].shape == (4, 6, 6, 1)
    np.testing.assert_array_equal(y["aux"].numpy(), y["main"].numpy()[:, 4::8, 4::8])
    x, _ = next(iter(data.make_dataset(records, "val", 4, training=False, window=48)))
    assert x["image"].shape == (4, 64, 64, 3)


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


def test_seed_recipe_epoch_warmup_matches_numpy():
    lr_init, num = 0.01, 5
    ref = np.where(np.arange(1, 31) < num, lr_init * np.arange(1, 31) / num, lr_init)
    got = [schedules.epoch_warmup(e, lr_init, num) for e in range(30)]
    np.testing.assert_allclose(got, ref)
    assert got[0] == pytest.approx(0.002) and got[4] == got[29] == lr_init


def test_step_warmup_cosine_matches_numpy_and_reloads():
    sched = schedules.WarmupCosine(0.1, warmup_steps=50, decay_steps=400, alpha=0.01)
    step = np.arange(600)
    t = np.clip((step - 50) / 400, 0, 1)
    ref = np.where(step < 50, 0.1 * (step + 1) / 50, 0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t))))
    got = np.array([float(sched(s)) for s in step])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert float(again(123)) == pytest.approx(float(sched(123)))


def test_library_arguments_are_checked_as_keras_checks_them():
    for kwargs, needle in (({"lr": 0, "warmup_steps": 3}, "Argument `lr` must be a finite number > 0. Received: lr=0"),
                           ({"lr": 1e-3, "warmup_steps": -1}, "Received: warmup_steps=-1"),
                           ({"lr": 1e-3, "warmup_steps": 3, "alpha": 2}, "Argument `alpha` must be in [0, 1]")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            schedules.WarmupCosine(**kwargs)
    with pytest.raises(ValueError, match=re.escape("Received: scale=(0, 1)")):
        data.Augment(scale=(0, 1))  # a zero scale would divide by zero
    with pytest.raises(ValueError, match=re.escape("Received: rotate_degrees=270")):
        data.Augment(rotate_degrees=270)
    # The library's default is the command's: flips, scale and rotation.
    assert data.Augment() == data.Augment(True, (0.75, 1.25), 15.0)
    assert train.build_parser().parse_args([]).aug_scale == "0.75,1.25"


def test_median_frequency_class_weights():
    weights = training.median_frequency([100, 10, 0, 40])  # frequencies 2/3, 1/15, -, 4/15
    assert weights == pytest.approx([0.4, 4.0, 1.0, 1.0])


def _cfg(**kw):
    base = dict(epochs=2, batch_size=4, lr=2e-3)
    base.update(kw)
    return train.TrainConfig(**base)


def test_fit_logs_per_epoch_and_saves_a_loadable_model(records, tmp_path):
    run = str(tmp_path / "run")
    model = build_model(21, 64, width=8)
    training.fit(model, records, run, _cfg(warmup_epochs=3), verbose=0)
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
    training.fit(build_model(21, 64, width=8), records, run2, _cfg(epochs=1, warmup_steps=3), verbose=0)
    schedule = keras.models.load_model(f"{run2}/best.keras").optimizer._learning_rate
    assert isinstance(schedule, schedules.WarmupCosine) and schedule.warmup_steps == 3


def test_class_weights_change_the_loss_as_weighted_cross_entropy(records):
    placement = train.distribute.make("auto")
    x, y = next(iter(data.make_dataset(records, "val", 4, training=False)))
    keras.utils.set_random_seed(0)
    model = build_model(21, 64, width=8, arch="deconv")
    losses = []
    for weights in (None, [2.0] * 21, [1.0] + [0.0] * 20):
        steps = train.loop.Steps(model, keras.optimizers.Adam(), {"main": 1.0}, 21, placement, weights)
        losses.append(float(steps.eval(x, y)[0]["loss"]))
    labels = y["main"].numpy()[..., 0]
    logits = model.predict_on_batch(x)["main"]
    ce = -np.log(np.take_along_axis(tf.nn.softmax(logits).numpy(), np.minimum(labels, 20)[..., None], -1)[..., 0])
    valid = labels != 255
    assert losses[0] == pytest.approx(ce[valid].mean(), rel=1e-4)
    assert losses[1] == pytest.approx(2 * losses[0], rel=1e-5)  # weights scale each pixel's term
    assert losses[2] == pytest.approx(ce[valid & (labels == 0)].sum() / valid.sum(), rel=1e-4)
    # --class_weights repeat_factor: a crop of weight r counts as r copies of it.
    steps = train.loop.Steps(model, keras.optimizers.Adam(), {"main": 1.0}, 21, placement)
    for weights, want in (([3.0] * 4, ce[valid].mean()), ([0.0, 1.0, 0.0, 0.0], ce[1][valid[1]].mean()),
                          ([1.0, 2.0, 0.0, 0.0], (ce[0][valid[0]].sum() + 2 * ce[1][valid[1]].sum())
                           / (valid[0].sum() + 2 * valid[1].sum()))):
        weighted = dict(y, **{data.CROP_WEIGHT: tf.constant(weights)})
        assert float(steps.eval(x, weighted)[0]["loss"]) == pytest.approx(want, rel=1e-4)


def test_hard_pixels_train_on_the_hardest_share_and_validate_on_every_pixel(records):
    placement = train.distribute.make("auto")
    x, y = next(iter(data.make_dataset(records, "val", 4, training=False)))
    keras.utils.set_random_seed(0)
    model = build_model(21, 64, width=8, arch="deconv")
    labels = y["main"].numpy()[..., 0]
    valid = labels != 255

    def cross_entropy(logits):
        p = tf.nn.softmax(logits).numpy()
        return -np.log(np.take_along_axis(p, np.minimum(labels, 20)[..., None], -1)[..., 0])[valid]

    steps = train.loop.Steps(model, keras.optimizers.Adam(), {"main": 1.0}, 21, placement, hard_pixels=0.25)
    # Validation: every labelled pixel, as without mining.
    assert float(steps.eval(x, y)[0]["loss"]) == pytest.approx(cross_entropy(model.predict_on_batch(x)["main"]).mean(),
                                                              rel=1e-4)
    # Training: the mean over the hardest quarter, from the weights before the step's update.
    ce = cross_entropy(model(x, training=True)["main"])
    hardest = np.sort(ce)[::-1][:math.ceil(0.25 * labels.size)]  # a quarter of all pixels, as DeepLab counts
    assert float(steps.train(x, y)[0]["loss"]) == pytest.approx(hardest.mean(), rel=1e-4)
    assert hardest.mean() > 1.05 * ce.mean()  # not the mean over every pixel
    # The threshold compiles under XLA (a static k), as TPUs need.
    per_pixel = tf.random.stateless_uniform((2, 8, 8), (0, 1))
    keep = tf.random.stateless_uniform((2, 8, 8), (0, 2)) > 0.2
    xla = tf.function(lambda a, b: train.loop._hardest(a, b, 0.25), jit_compile=True)(per_pixel, keep)
    assert float(xla) == np.sort(per_pixel.numpy()[keep.numpy()])[::-1][31]  # the 32nd of 128, among the kept
    with pytest.raises(ValueError, match="hard_pixels"):
        train.loop.Steps(model, keras.optimizers.Adam(), {"main": 1.0}, 21, placement, hard_pixels=0.0)


def test_the_hard_pixel_threshold_is_top_ks_exactly():
    """kth_largest (bisection on bit patterns) against min(top_k): ties, the -1 of unlabelled pixels, ±0, ±inf,
    tiny and huge magnitudes; k = 1, the size and one drawn between; eagerly, in a graph and under XLA."""
    rng = np.random.default_rng(0)
    graph = tf.function(train.loop.kth_largest)
    xla = tf.function(train.loop.kth_largest, jit_compile=True)
    for trial in range(120):
        values = (rng.standard_normal(int(rng.integers(1, 600))) * 10.0 ** rng.uniform(-30, 30)).astype(np.float32)
        if trial % 4 == 1:
            values = np.round(values * 4 / np.abs(values).max()).astype(np.float32)  # many ties
        elif trial % 4 == 2:
            values = np.where(rng.random(values.size) < 0.6, -1.0, np.abs(values)).astype(np.float32)
        elif trial % 4 == 3:
            values = np.concatenate([values, [0.0, -0.0, np.inf, -np.inf, np.float32(1e-45)]]).astype(np.float32)
        for k in {1, values.size, int(rng.integers(1, values.size + 1))}:
            want = np.sort(values)[::-1][k - 1]
            assert want == float(tf.reduce_min(tf.math.top_k(values, k).values))
            assert float(graph(tf.constant(values), tf.constant(k))) == want, (trial, k)
        assert float(xla(tf.constant(values), tf.constant(k))) == want
    assert float(train.loop.kth_largest(tf.constant([3.0, 1.0, 2.0]), 2)) == 2.0  # eager


def test_cross_entropy_equals_tensorflows_in_value_and_gradient():
    """loop.cross_entropy (gradient written out) against tf.nn.sparse_softmax_cross_entropy_with_logits, on logits
    up to ±90 (exp would overflow unshifted) and a weighted sum as the loss; XLA gives the same values."""
    rng = np.random.default_rng(1)
    logits = tf.constant(rng.standard_normal((2, 8, 8, 21)).astype(np.float32) * 30)
    labels = tf.constant(rng.integers(0, 21, (2, 8, 8)).astype(np.int32))
    weight = tf.constant(rng.random((2, 8, 8)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = train.loop.cross_entropy(labels, logits)
        theirs = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        ours_total, theirs_total = tf.reduce_sum(ours * weight), tf.reduce_sum(theirs * weight)
    assert np.isfinite(ours.numpy()).all() and float(tf.reduce_max(theirs)) > 50
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours_total, logits), tape.gradient(theirs_total, logits), atol=1e-6)
    xla = tf.function(train.loop.cross_entropy, jit_compile=True)(labels, logits)
    np.testing.assert_allclose(xla, theirs, rtol=1e-5, atol=1e-5)


def test_the_training_twin_computes_what_the_model_computes_through_fused_batch_norm(records):
    """trainer.model.for_training: every BatchNormalization of the model runs through the fused kernel in training,
    with the model's own weights; outputs, gradients and moving statistics are the layer's own to float32
    rounding, inference is the layer itself, and the model (what is saved) keeps Keras's layers."""
    from trainer.model import FusedBatchNorm, for_training

    keras.utils.set_random_seed(0)
    model = build_model(21, 64, width=8)
    twin = for_training(model)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    fused = [layer for layer in twin.layers if isinstance(layer, FusedBatchNorm)]
    assert len(norms) == len(fused) > 5 and {id(f.batch_norm) for f in fused} == {id(n) for n in norms}
    assert {id(w) for w in twin.weights} == {id(w) for w in model.weights}
    x, _ = next(iter(data.make_dataset(records, "train", 4, training=True, seed=0)))
    start = [w.numpy() for w in model.non_trainable_weights]
    results = []
    for net in (model, twin):
        for w, value in zip(model.non_trainable_weights, start):
            w.assign(value)
        with tf.GradientTape() as tape:
            out = net(x, training=True)
            loss = sum(tf.reduce_mean(tf.square(v)) for v in out.values())
        results.append((out, tape.gradient(loss, model.trainable_weights),
                        [w.numpy() for w in model.non_trainable_weights]))
    (out_k, grads_k, stats_k), (out_f, grads_f, stats_f) = results
    for name in out_k:
        np.testing.assert_allclose(out_f[name], out_k[name], rtol=1e-4, atol=1e-4 * float(np.abs(out_k[name]).max()))
    for a, b in zip(grads_f, grads_k):
        np.testing.assert_allclose(a, b, atol=1e-3 * float(np.abs(b).max()) + 1e-9)
    for a, b, before in zip(stats_f, stats_k, start):
        assert not np.array_equal(b, before)  # the moving statistics moved ...
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # ... as the layer moves them (biased variance)
    for name, value in model(x, training=False).items():
        assert np.array_equal(twin(x, training=False)[name], value)
    norms[0].trainable = False  # a frozen layer: inference statistics, no update, as Keras does
    before = norms[0].moving_mean.numpy()
    np.testing.assert_allclose(twin(x, training=True)["main"], model(x, training=True)["main"], rtol=1e-4,
                               atol=1e-4 * float(np.abs(out_k["main"]).max()))
    assert np.array_equal(norms[0].moving_mean.numpy(), before)
    assert not any(isinstance(layer, FusedBatchNorm) for layer in model.layers)
    # A nested model's BatchNorms too: deeplabv3plus's backbone.
    deeplab = build_model(21, 64, arch="deeplabv3plus", backbone="mobilenetv2", backbone_weights="none")
    backbone, twin_backbone = deeplab.get_layer("backbone"), for_training(deeplab).get_layer("backbone")
    assert (sum(isinstance(layer, FusedBatchNorm) for layer in twin_backbone.layers)
            == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers) > 10)


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
    cfg = _cfg(epochs=1, normalization=Normalization("dataset", in_model=False))
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
        training.fit(build_model(21, 64, width=16), records, run, _cfg(epochs=4), verbose=0)
    assert "\n" not in str(e.value) and os.path.isdir(f"{run}/backup")
    second = _Watch()
    history = training.fit(build_model(21, 64, width=8), records, run, _cfg(epochs=4), verbose=0,
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


def test_best_is_saved_only_when_the_whole_run_improves(tmp_path):
    saved = []
    placement = train.distribute.make("auto")
    model = build_model(21, 64, width=8)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    (tmp_path / "run").mkdir()
    runner = train.loop.Loop(train.loop.Steps(model, optimizer, {"main": 1.0}, 21, placement), placement,
                             str(tmp_path / "run"), save_best=saved.append, verbose=0)
    state = train.loop.RunState(epoch=4, best=0.5, best_epoch=3)  # as restored from backup/ after a resume
    for epoch, score in ((5, 0.4), (6, 0.55), (7, 0.5)):
        runner._end_epoch(epoch, {"loss": 1.0, "val_main_miou": score}, state)
    assert len(saved) == 1 and (state.best, state.best_epoch) == (0.55, 6)


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


def test_overwrite_starts_clean(records, tmp_path):
    run = tmp_path / "run"
    args = ["--data_dir", records, "--model_dir", str(run), "--epochs", "1", "--batch_size", "4", "--width", "8"]
    train.run(args)
    (run / "eval-val.json").write_text("{}")
    (run / "tensorboard" / "stale.txt").write_text("from an earlier run")
    with pytest.raises(train.UsageError, match="--overwrite"):
        train.run(args)
    train.run(args + ["--overwrite"])
    assert not (run / "eval-val.json").exists() and not (run / "tensorboard" / "stale.txt").exists()
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "log.csv"))] == [0]
    assert (run / run_dir.MARKER).exists() and not (run / "backup").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_a_segprep_run_is_never_emptied(records, tmp_path, capsys, overwrite):
    mine = tmp_path / "mine"
    (mine / "backup").mkdir(parents=True)
    (mine / "backup" / "thesis.tex").write_text("years of work")
    (mine / "serving").mkdir()
    (mine / "serving" / "model.pb").write_text("someone else's model")
    (mine / "log.csv").write_text("my own log")
    args = ["--data_dir", records, "--model_dir", str(mine), "--epochs", "1"] + (["--overwrite"] if overwrite else [])
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files no segprep run wrote (e.g. backup)" in err[0]
    assert (mine / "backup" / "thesis.tex").read_text() == "years of work"
    assert (mine / "serving" / "model.pb").exists() and (mine / "log.csv").read_text() == "my own log"
    with pytest.raises(train.UsageError):
        run_folders.clear_run(str(mine))  # the library function refuses too
    assert (mine / "log.csv").exists()


def test_predict_stitches_windows_and_writes_palette_pngs(run_dir, tmp_path):
    p = predict.Predictor(run_dir)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    # No overlap on a multiple of the crop: every pixel comes from exactly one window.
    exact = image[:128, :192]
    stitched = p.predict(exact, overlap=0.0)
    assert stitched.shape == (128, 192)
    for y in (0, 64):
        for x in (0, 64, 128):
            window = np.argmax(p.probabilities(exact[None, y:y + 64, x:x + 64])[0], -1)
            np.testing.assert_array_equal(stitched[y:y + 64, x:x + 64], window)
    # The last window is flush with the far edge: the bottom-right corner is that window's alone.
    full = p.predict(image, overlap=0.0)
    last = np.argmax(p.probabilities(image[None, 86:, 136:])[0], -1)
    np.testing.assert_array_equal(full[128:, 192:], last[42:, 56:])
    # With overlap, the corner only one window covers still equals that window's own prediction.
    overlapped = p.predict(image, overlap=0.5)
    first = np.argmax(p.probabilities(image[None, :64, :64])[0], -1)
    np.testing.assert_array_equal(overlapped[:32, :32], first[:32, :32])
    # Small images are padded and cut back; written colours are palette colours.
    img_path = tmp_path / "small.jpg"
    img_path.write_bytes(codec.encode_image(image[:40, :50], "jpeg"))
    out = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--input", str(img_path), "--output_dir", str(out)]) == 0
    mask, _ = codec.decode_mask((out / "small.png").read_bytes())
    assert mask.shape == (40, 50, 3)
    palette = {tuple(c) for c in VOC.colors}
    assert {tuple(c) for c in mask.reshape(-1, 3)} <= palette
    assert (out / "small_overlay.jpg").exists()
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "nope.jpg")]) == 2


def test_predict_equals_summing_every_window_on_a_full_canvas(run_dir):
    p = predict.Predictor(run_dir)
    image = np.random.default_rng(1).integers(0, 255, (301, 157, 3), dtype=np.uint8)  # tall: the ring wraps
    s, stride = 64, 43  # overlap 1/3
    canvas = np.zeros((301, 157, 21), np.float32)
    for y in predict._starts(301, s, stride):
        for x in predict._starts(157, s, stride):
            canvas[y:y + s, x:x + s] += p.probabilities(image[None, y:y + s, x:x + s])[0]
    np.testing.assert_array_equal(p.predict(image, overlap=1 - stride / s), np.argmax(canvas, -1))


def test_predict_outputs_and_formats(run_dir, tmp_path, capsys):
    image = np.random.default_rng(2).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(codec.encode_image(image, "png"))
    aux = predict.Predictor(run_dir, "aux")  # 1/8 resolution: logits upsampled to the window
    assert aux.predict(image).shape == (90, 130)
    out = tmp_path / "idx"
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output_dir", str(out),
                         "--format", "index", "--output", "upsample"]) == 0
    written, kind = codec.decode_mask((out / "a.png").read_bytes())
    assert kind == "index" and headers.png_color_type((out / "a.png").read_bytes()) == (0, 8)
    np.testing.assert_array_equal(written, predict.Predictor(run_dir, "upsample").predict(image))
    capsys.readouterr()
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output", "mian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["predict: error: --output mian: the model's outputs are aux, main, upsample."]


SERVE = """
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
out = serve(images=tf.constant(images))
odd = serve(images=tf.constant(images[:, :50, :77]))
print(json.dumps({"classes": out["classes"].numpy().tolist(), "dtype": str(out["classes"].dtype.name),
                  "sums": out["probabilities"].numpy().sum(-1).round(4).ravel()[:50].tolist(),
                  "odd": list(odd["classes"].shape), "odd_p": list(odd["probabilities"].shape)}))
"""


def test_serving_export_loads_in_a_fresh_process_and_predicts_as_predict_does(run_dir, tmp_path):
    images = np.random.default_rng(3).integers(0, 255, (2, 128, 192, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([sys.executable, "-c", SERVE, f"{run_dir}/serving", str(tmp_path / "images.npy")],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dtype"] == "uint8" and out["odd"] == [2, 50, 77] and out["odd_p"] == [2, 50, 77, 21]
    assert np.allclose(out["sums"], 1.0, atol=1e-3)
    p = predict.Predictor(run_dir)
    for image, classes in zip(images, out["classes"]):  # windows of the crop, no overlap: predict's own result
        np.testing.assert_array_equal(np.array(classes), p.predict(image, overlap=0.0))


def test_evaluate_prints_per_class_iou_and_writes_json(run_dir, records, capsys):
    result = evaluate.run(["--model_dir", run_dir, "--data_dir", records])
    assert 0.0 <= result["miou"] <= 1.0 and result["pixels"] > 0
    assert "background" in result["per_class"] and "mIoU" in capsys.readouterr().out
    assert json.load(open(f"{run_dir}/eval-val.json"))["miou"] == result["miou"]


def test_scores_on_a_known_confusion_matrix():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    s = evaluate.scores(cm, ["a", "b", "c"])
    assert s["per_class"]["a"]["iou"] == pytest.approx(8 / 11) and s["per_class"]["b"]["iou"] == pytest.approx(3 / 6)
    assert s["miou"] == pytest.approx((8 / 11 + 3 / 6) / 2) and s["pixel_accuracy"] == pytest.approx(11 / 14)
    assert "c" not in s["per_class"]


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
        training.fit(build_model(21, 64, width=8), records, str(tmp_path / "r"), _cfg(epochs=1), verbose=0)
    os.remove(shard)
    with pytest.raises(data.DataError, match="not there"):
        data.make_dataset(records, "train", 2, training=True)
    with pytest.raises(train.UsageError, match="classes"):
        training.fit(build_model(5, 64, width=8), records, str(tmp_path / "r2"), _cfg(), verbose=0)
    assert train.main(["--data_dir", str(tmp_path / "nothing")]) == 2
    for bad in ("main=-1", "main=nan", "main=0,upsample=0,aux=0", "main=x"):
        with pytest.raises(train.UsageError, match="--loss_weights"):
            training.loss_weights(bad, ["main", "upsample", "aux"])


def test_a_split_whose_inputs_all_failed_is_named_not_trained_on(voc_tree, tmp_path):
    for image_id in voc_tree.splits["val"]:
        os.remove(layout.mask_path(voc_tree.root, image_id))
    out = str(tmp_path / "out")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--runner=DirectRunner"]) == 1
    meta = data.load_metadata(out)
    assert meta.splits["val"].shards == ("val-00000-of-00001.tfrecord",)  # one empty shard, as named
    with pytest.raises(data.DataError, match="Split 'val' .* has no records"):
        data.make_dataset(out, "val", 2, training=False)


def test_the_model_learns_the_crops_it_is_trained_on(records):
    """The model, its three losses and Adam fit a fixed set of crops: 60 steps over the train split's 3 batches, in
    the deterministic order of an evaluation pass, from seeded weights. Measured over seeds 0-4 (2 cores): the loss
    falls from 4.26 to 0.39-0.54 and the mIoU on those crops reaches 0.40-0.46 against 0.225 for predicting
    background everywhere; the bounds below leave a margin of 2× on the loss and 0.09 on the mIoU. (Width 16: at
    width 8 the default model's separable 1/2-resolution blocks and 2×2 head fit these crops too slowly for 60
    steps, loss 1.1-1.6.)"""
    meta = data.load_metadata(records)
    keras.utils.set_random_seed(0)
    model = build_model(21, 64, width=16)
    ds = data.make_dataset(records, "train", 6, training=False, meta=meta, targets=data.strides_of(model)[1])
    batches = list(ds.take(data.steps(meta, "train", 6)))  # one pass, in order (evaluation data repeats)
    assert len(batches) == 3
    steps = train.loop.Steps(model, keras.optimizers.Adam(3e-3), {"main": 1.0, "upsample": 0.2, "aux": 0.2}, 21,
                             train.distribute.make("auto"))
    before = np.mean([float(steps.eval(x, y)[0]["loss"]) for x, y in batches])
    for _ in range(20):
        for x, y in batches:
            steps.train(x, y)
    after = np.mean([float(steps.eval(x, y)[0]["loss"]) for x, y in batches])
    cm = evaluate.confusion(model, ds, len(batches), 21)  # the same crops, through evaluate's own count
    result = evaluate.scores(cm, meta.class_names)
    present = int((cm.sum(1) > 0).sum())
    baseline = cm[0].sum() / cm.sum() / present  # all background: IoU_bg = background's share, the others 0
    assert after < before / 4, (before, after)
    assert result["miou"] > baseline + 0.08, (result["miou"], baseline)


def test_predict_and_evaluate_commands_are_quiet_show_progress_and_summarise(run_dir, voc_tree, tmp_path):
    """Fresh processes, as a user runs them, with no TF_CPP_MIN_LOG_LEVEL: stderr holds only our progress lines
    (whatever TensorFlow's build would print), and -v lets TensorFlow's own lines through again."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SEGPREP_VERBOSE")}
    env.update(PYTHONPATH=REPO, SEGPREP_PROGRESS_SECONDS="0")
    out = tmp_path / "preds"
    proc = subprocess.run([sys.executable, "-m", "trainer.predict", "--model_dir", run_dir, "--input", voc_tree.root,
                           "--split", "train", "--output_dir", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    progress = proc.stderr.splitlines()
    assert progress and all(line.startswith("predict: ") and " images, " in line for line in progress), progress
    assert "predict: 3/3 images" in progress[-1]
    assert re.fullmatch(r"predict: 3 of 3 images \([\d.]+ Mpx\) in [\d.]+ s \([\d.]+ Mpx/s\), 0 failed → "
                        + re.escape(str(out)) + "/\n", proc.stdout), proc.stdout
    assert sorted(os.listdir(out)) == sorted([".segprep-predictions.jsonl"] + [f"{i}{s}" for i in ("t1", "t2", "t3")
                                                                               for s in (".png", "_overlay.jpg")])
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", run_dir, "--batch_size", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith("evaluate: ") and " batches, " in line for line in proc.stderr.splitlines())
    assert re.search(r"^evaluate: \d+ val crops \([\d,]+ labelled pixels\) in [\d.]+ s → .*eval-val.json$",
                     proc.stdout, re.M), proc.stdout
    loud = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", run_dir, "-v"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert [line for line in loud.stderr.splitlines() if not line.startswith("evaluate: ")], \
        "-v shows TensorFlow's own lines again"


def test_predict_names_from_a_split_list_stay_inside_the_output_dir(run_dir, voc_tree, tmp_path, capsys):
    import os

    root = voc_tree.root
    os.makedirs(os.path.join(root, "JPEGImages", "sub"))
    codec_bytes = open(os.path.join(root, "JPEGImages", "t1.jpg"), "rb").read()
    open(os.path.join(root, "JPEGImages", "sub", "deep.jpg"), "wb").write(codec_bytes)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(codec_bytes)
    with open(os.path.join(root, "ImageSets", "Segmentation", "odd.txt"), "w") as f:
        f.write(f"../../{outside.stem}\nsub/deep\nt1\n/etc/x\n")
    out = tmp_path / "preds"
    capsys.readouterr()
    assert predict.main(["--model_dir", run_dir, "--input", root, "--split", "odd", "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "'../../outside' holds a '.' or '..' path segment" in err and "'/etc/x' holds an absolute path" in err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [".segprep-predictions.jsonl", "sub/deep.png", "sub/deep_overlay.jpg", "t1.png",
                       "t1_overlay.jpg"]  # the others went on
    assert not (tmp_path / "outside.png").exists()


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


def test_the_default_run_dir_changes_with_the_recipe_and_the_model_revision(monkeypatch):
    """The same command resumes its own run dir; another recipe, or a changed model of this package (an old
    checkpoint would not fit it), gets another one."""

    def run_dir(*argv):
        args = train.build_parser().parse_args(list(argv))
        train._arch_flags(args)
        args.train_split, args.val_split = "train", "val"
        return train._default_model_dir(args)

    default = run_dir()
    assert run_dir() == default
    assert run_dir("--hard_pixels", "1") != default  # the default trains on the hardest 20% of the pixels
    assert run_dir("--seed", "1") != default
    assert run_dir("--train_crop_size", "192") != default
    deconv, backbone = run_dir("--arch", "deconv"), run_dir("--arch", "deeplabv3plus", "--hard_pixels", "1")
    monkeypatch.setattr(train, "MODEL_REVISION", train.MODEL_REVISION - 1)
    assert run_dir() != default and run_dir("--arch", "deconv") != deconv
    assert run_dir("--arch", "deeplabv3plus", "--hard_pixels", "1") == backbone  # its layers are keras.applications'


def test_an_op_without_a_deterministic_kernel_points_to_the_flag():
    # TensorFlow's own words when a GPU op has no deterministic kernel under op determinism.
    gpu = tf.errors.UnimplementedError(None, None, "Deterministic GPU implementation of unsorted segment reduction "
                                                   "op not available.")
    usage = training.no_deterministic_kernel(gpu)
    assert isinstance(usage, train.UsageError) and "\n" not in str(usage)
    assert str(usage).startswith("Deterministic GPU implementation of unsorted segment reduction op not available.")
    assert "--no_op_determinism" in str(usage)
    assert training.no_deterministic_kernel(tf.errors.UnimplementedError(None, None, "Conv3D on int8")) is None
