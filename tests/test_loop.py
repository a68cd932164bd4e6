"""trainer/loop.py: the loss (class weights, hard pixels, the written-out cross-entropy) and best.keras."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import data, train
from trainer.model import build_model


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
