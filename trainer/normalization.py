"""Input normalisation, in one place: which statistics, and where they are applied.

    stats  "dataset"   the training crops' RGB mean and standard deviation from metadata.json (default)
           "simple"    the seed recipe's x / 255 - 0.5, i.e. mean 127.5 and std 255 for every channel
    where  in the model (default): its first layer normalises, so model.keras, best.keras and the serving export
           take raw uint8 RGB and the input pipeline ships uint8;
           in the pipeline: tf.data normalises, for a custom model without such a layer.

A run records its choice in segprep.json (`Normalization.run_info`), and predict and evaluate read it back from
there, so an image is always normalised the way the model was trained.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STATS = ("dataset", "simple")
STD_FLOOR = 1e-3  # the smallest std a channel is divided by (a constant channel would divide by 0)


def floored(std) -> list[float]:
    """Per-channel std, each at least STD_FLOOR: what every normalisation divides by."""
    return [max(float(s), STD_FLOOR) for s in std]


def normalize(x, mean, std):
    """(x - mean) / std in float32, per channel (0..255 scale), for NumPy arrays (predict) and TensorFlow tensors
    (the input pipeline) alike; the model's own first layer computes the same (trainer/model.py)."""
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(floored(std), np.float32)
    import tensorflow as tf

    return (tf.cast(x, tf.float32) - tf.constant(mean, tf.float32)) / tf.constant(floored(std), tf.float32)


@dataclasses.dataclass(frozen=True)
class Normalization:
    stats: str = "dataset"
    in_model: bool = True

    def __post_init__(self):
        if self.stats not in STATS:
            raise ValueError(f"normalization stats must be one of {STATS}. Received: {self.stats!r}")

    def mean_std(self, meta) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) on the 0..255 scale; std is at least STD_FLOOR."""
        if self.stats == "simple":
            return [127.5] * 3, [255.0] * 3
        return [float(m) for m in meta.rgb_mean], floored(meta.rgb_std)

    def for_pipeline(self, meta) -> tuple[list[float], list[float]] | None:
        """What the input pipeline applies: None when the model normalises itself."""
        return None if self.in_model else self.mean_std(meta)

    def run_info(self, meta) -> dict:
        """What a run records of it in segprep.json (`segprep.formats.run_dir.RunInfo`'s normalize_* fields)."""
        mean, std = self.mean_std(meta)
        return {"normalize_stats": self.stats, "normalize_in_model": self.in_model, "normalize_mean": tuple(mean),
                "normalize_std": tuple(std)}

    @staticmethod
    def of_run(info) -> tuple[bool, np.ndarray, np.ndarray]:
        """From a run's RunInfo: (whether the model normalises itself, mean, std)."""
        return (info.normalize_in_model, np.asarray(info.normalize_mean, np.float32),
                np.asarray(info.normalize_std, np.float32))
