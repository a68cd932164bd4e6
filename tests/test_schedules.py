"""trainer/schedules.py: the warm-up schedules against exact NumPy references, and arguments checked as Keras checks
them."""

import re

import keras
import numpy as np
import pytest

from trainer import data, schedules, train


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
