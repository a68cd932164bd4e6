"""Learning-rate warm-up: the seed recipe's per-epoch rule, and a per-step linear warm-up into cosine decay.

Per epoch (the seed recipe): for warm-up length `num` and epoch `i` counted from 1,
    lr = lr_init * i / num   while i < num,   then lr_init.
Per step: lr = lr_init * (step + 1) / warmup_steps for the first warmup_steps steps, then a cosine decay from
lr_init to alpha * lr_init over decay_steps (constant when decay_steps is 0).
"""

from __future__ import annotations

import math

import keras


def epoch_warmup(epoch_index: int, lr_init: float, num: int) -> float:
    """The seed recipe's rule; `epoch_index` counts from 0 as Keras does."""
    i = epoch_index + 1
    return lr_init * i / num if i < num else lr_init


@keras.saving.register_keras_serializable(package="segprep")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `warmup_steps`, then cosine decay over `decay_steps` to `alpha * lr`."""

    def __init__(self, lr: float, warmup_steps: int, decay_steps: int = 0, alpha: float = 0.0):
        checks = (("lr", lr, math.isfinite(lr) and lr > 0, "a finite number > 0"),
                  ("warmup_steps", warmup_steps, warmup_steps >= 0, "an integer >= 0"),
                  ("decay_steps", decay_steps, decay_steps >= 0, "an integer >= 0"),
                  ("alpha", alpha, 0 <= alpha <= 1, "in [0, 1]"))
        for name, value, ok, what in checks:
            if not ok:
                raise ValueError(f"Argument `{name}` must be {what}. Received: {name}={value}")
        self.lr = float(lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.alpha = float(alpha)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = self.lr * (step + 1.0) / max(self.warmup_steps, 1)
        if self.decay_steps > 0:
            t = ops.clip((step - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
            after = self.lr * (self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + ops.cos(math.pi * t)))
        else:
            after = ops.convert_to_tensor(self.lr, "float32")
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {"lr": self.lr, "warmup_steps": self.warmup_steps, "decay_steps": self.decay_steps,
                "alpha": self.alpha}
