"""Input normalisation, in one place: which statistics, and where they are applied.

    stats  "dataset"   the training crops' RGB mean and standard deviation from metadata.json (default)
           "simple"    the seed recipe's x / 255 - 0.5, i.e. mean 127.5 and std 255 for every channel
    where  in the model (default): its first layer normalises, so model.keras, best.keras and the serving export
           take raw uint8 RGB and the input pipeline ships uint8;
           in the pipeline: tf.data normalises, for a custom model without such a layer.

A run records its choice in segprep.json (`Normalization.to_json`), and predict and evaluate read it back from
there, so an image is always normalised the way the model was trained.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STATS = ("dataset", "simple")
STD_FLOOR = 1e-3  # the smallest std a channel is divided by (a constant channel would divide by 0)


@dataclasses.dataclass(frozen=True)
class Normalization:
    stats: str = "dataset"
    in_model: bool = True

    def __post_init__(self):
        if self.stats not in STATS:
            raise ValueError(f"normalization stats must be one of {STATS}. Received: {self.stats!r}")

    def mean_std(self, meta: dict) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) on the 0..255 scale; std is at least STD_FLOOR."""
        if self.stats == "simple":
            return [127.5] * 3, [255.0] * 3
        return [float(m) for m in meta["rgb_mean"]], [max(float(s), STD_FLOOR) for s in meta["rgb_std"]]

    def for_pipeline(self, meta: dict) -> tuple[list[float], list[float]] | None:
        """What the input pipeline applies: None when the model normalises itself."""
        return None if self.in_model else self.mean_std(meta)

    def to_json(self, meta: dict) -> dict:
        mean, std = self.mean_std(meta)
        return {"stats": self.stats, "in_model": self.in_model, "mean": mean, "std": std}

    @staticmethod
    def from_json(info: dict) -> tuple[bool, np.ndarray, np.ndarray]:
        """From a run's segprep.json: (whether the model normalises itself, mean, std). Runs written before this
        key existed said "input_normalization"."""
        norm = info.get("normalization")
        if norm is None:
            legacy = info.get("input_normalization", "model")
            norm = {"in_model": legacy == "model", "mean": info.get("rgb_mean", [127.5] * 3),
                    "std": info.get("rgb_std", [255.0] * 3)}
            if legacy == "simple":
                norm.update(mean=[127.5] * 3, std=[255.0] * 3)
        return bool(norm["in_model"]), np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
