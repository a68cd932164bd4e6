"""A training run's folder (`trainer.train --model_dir`), and its segprep.json: what predict and evaluate need
beside the model.

    RUN/model.keras  best.keras  log.csv  segprep.json  tensorboard/  serving/  backup/  eval-SPLIT.json  .segprep-run

segprep.json is written by `write` and read back, checked, by `read` (a `RunInfo`): nothing else spells its keys.
"""

from __future__ import annotations

import dataclasses
import json

from segprep import fields
from segprep.palette import Palette

MODEL = "model.keras"  # the trained model: plain keras.models.load_model reads it
BEST = "best.keras"  # the best val mIoU of the main output over the whole run
LOG = "log.csv"  # one row per epoch
INFO = "segprep.json"  # RunInfo
TENSORBOARD = "tensorboard"
SERVING = "serving"  # the SavedModel for TF Serving
BACKUP = "backup"  # only while training: what a killed run resumes from
STATE_NAME = "state.json"  # the backup's state (trainer/loop.py RunState)
STATE = f"{BACKUP}/{STATE_NAME}"
MARKER = ".segprep-run"  # written when a run starts: this folder is a segprep run

FILES = (MODEL, BEST, LOG, INFO)  # what --overwrite deletes, with FOLDERS and eval files
FOLDERS = (TENSORBOARD, BACKUP, SERVING)


def eval_file(split: str) -> str:
    """trainer.evaluate's scores of a split."""
    return f"eval-{split}.json"


def is_eval_file(name: str) -> bool:
    return name.startswith("eval-") and name.endswith(".json")


def marker_text() -> str:
    import time

    return json.dumps({"written_by": "segprep trainer.train", "started": time.time()}) + "\n"


class RunInfoError(ValueError):
    """A segprep.json that is not one this segprep wrote: one line naming the file and the key."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """segprep.json: the palette predictions are coloured with, the window size, how raw RGB is normalised, and
    how prepare made RGB of the source images (predict reads new images the same way)."""

    palette: Palette
    crop_size: int
    normalize_in_model: bool = True  # the model's first layer normalises; else the input pipeline must
    normalize_mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    normalize_std: tuple[float, ...] = (255.0, 255.0, 255.0)
    normalize_stats: str = "dataset"  # "dataset", "simple" or "backbone NAME"
    preprocessing: str | None = None  # a backbone's own preprocessing, described
    model: str = ""
    rgb_mean: tuple[float, ...] | None = None  # the training data's statistics
    rgb_std: tuple[float, ...] | None = None
    data_dir: str | None = None  # evaluate's default --data_dir
    bands: tuple[int, ...] | None = None
    image_range: tuple[float, float] | None = None
    config: dict | None = None  # the training settings
    strategy: str | None = None
    inputs: tuple[str, ...] = ("image",)  # the model's inputs by name: image and extra inputs
    extra_inputs: dict | None = None  # name → {"source", "channels", "dtype", "mean", "std"}, as metadata.json's

    def extra(self, name: str) -> dict:
        return (self.extra_inputs or {})[name]

    @property
    def num_classes(self) -> int:
        return self.palette.num_classes

    def to_json(self) -> dict:
        normalization = {"stats": self.normalize_stats, "in_model": self.normalize_in_model,
                         "mean": list(self.normalize_mean), "std": list(self.normalize_std)}
        if self.preprocessing:
            normalization["preprocessing"] = self.preprocessing
        return {"model": self.model, "class_names": list(self.palette.names),
                "class_colors": [list(c) for c in self.palette.colors],
                "ignore_colors": [list(c) for c in self.palette.ignore_colors], "num_classes": self.num_classes,
                "crop_size": self.crop_size, "normalization": normalization,
                "rgb_mean": list(self.rgb_mean) if self.rgb_mean else None,
                "rgb_std": list(self.rgb_std) if self.rgb_std else None, "data_dir": self.data_dir,
                "bands": list(self.bands) if self.bands else None,
                "image_range": list(self.image_range) if self.image_range else None,
                "config": self.config, "strategy": self.strategy, "inputs": list(self.inputs),
                "extra_inputs": self.extra_inputs or {}}

    @classmethod
    def from_json(cls, info: dict, where: str) -> RunInfo:
        """Checks every key predict and evaluate use (`RunInfoError` naming the first that is wrong). Runs written
        before "normalization" said "input_normalization" ("model", "pipeline" or "simple")."""
        remedy = "it was edited, or not written by this segprep's trainer.train; train the run again (--overwrite)."
        try:
            fields.check(info, _INFO, where, remedy)
            if isinstance(info.get("normalization"), dict):
                fields.check(info["normalization"], _NORMALIZATION, f"{where}, 'normalization'", remedy)
        except fields.FieldError as e:
            raise RunInfoError(str(e)) from None
        if len(info["class_colors"]) != len(info["class_names"]) or info["num_classes"] != len(info["class_names"]):
            raise RunInfoError(f"{where}: {len(info['class_names'])} class names, {len(info['class_colors'])} "
                               f"colours and num_classes {info['num_classes']} do not agree: {remedy}")
        norm = info.get("normalization")
        if norm is None:  # runs older than the key
            legacy = info.get("input_normalization", "model")
            norm = {"stats": "dataset", "in_model": legacy == "model", "mean": info.get("rgb_mean", [127.5] * 3),
                    "std": info.get("rgb_std", [255.0] * 3)}
            if legacy == "simple":
                norm.update(stats="simple", mean=[127.5] * 3, std=[255.0] * 3)
        palette = Palette(tuple(info["class_names"]), tuple(map(tuple, info["class_colors"])),
                          tuple(map(tuple, info.get("ignore_colors") or [])), draw_only=True)
        optional = {key: tuple(info[key]) if info.get(key) else None
                    for key in ("rgb_mean", "rgb_std", "bands", "image_range")}
        for name in info.get("inputs") or ():
            if name != "image":
                entry = (info.get("extra_inputs") or {}).get(name)
                if not isinstance(entry, dict):
                    raise RunInfoError(f"{where}: the input {name!r} has no entry in 'extra_inputs': {remedy}")
                try:
                    fields.check(entry, _EXTRA, f"{where}, extra input {name!r}", remedy)
                except fields.FieldError as e:
                    raise RunInfoError(str(e)) from None
        return cls(palette=palette, crop_size=info["crop_size"], normalize_in_model=bool(norm["in_model"]),
                   normalize_mean=tuple(norm["mean"]), normalize_std=tuple(norm["std"]),
                   normalize_stats=str(norm.get("stats", "dataset")), preprocessing=norm.get("preprocessing"),
                   model=str(info.get("model", "")), data_dir=info.get("data_dir"), config=info.get("config"),
                   strategy=info.get("strategy"), inputs=tuple(info.get("inputs") or ("image",)),
                   extra_inputs=info.get("extra_inputs") or None, **optional)


def dumps(info: RunInfo) -> str:
    return json.dumps(info.to_json(), indent=1, default=str)


def parse(data: bytes, where: str) -> RunInfo:
    """segprep.json's bytes → RunInfo; `RunInfoError` for a file that is not valid JSON or not one this segprep
    wrote."""
    try:
        info = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RunInfoError(f"{where} is not valid JSON ({e}): it was edited, or not written by this segprep's "
                           "trainer.train; train the run again (--overwrite).") from None
    return RunInfo.from_json(info, where)


_INFO = {
    "class_names": fields.Field("a list of class names", lambda v: fields.list_of(fields.text)(v) and bool(v)),
    "class_colors": fields.Field("a list of [r, g, b] colours", fields.list_of(fields.color)),
    "ignore_colors": fields.Field("a list of [r, g, b] colours", fields.list_of(fields.color), required=False),
    "num_classes": fields.Field("a positive integer", fields.integer(1)),
    "crop_size": fields.Field("a positive integer", fields.integer(1)),
    "normalization": fields.Field("an object", lambda v: isinstance(v, dict), required=False),
    "rgb_mean": fields.Field("three numbers", fields.optional(fields.list_of(fields.number, 3)), required=False),
    "rgb_std": fields.Field("three numbers", fields.optional(fields.list_of(fields.number, 3)), required=False),
    "data_dir": fields.Field("a path", fields.optional(fields.text), required=False),
    "bands": fields.Field("a list of band numbers or null", fields.optional(fields.list_of(fields.integer(1))),
                          required=False),
    "image_range": fields.Field("[low, high] or null", fields.optional(fields.list_of(fields.number, 2)),
                                required=False),
    "inputs": fields.Field("a list of input names", fields.list_of(fields.text), required=False),
    "extra_inputs": fields.Field("an object {name: {...}}", lambda v: isinstance(v, dict), required=False),
}
_EXTRA = {
    "channels": fields.Field("a positive integer", fields.integer(1)),
    "dtype": fields.Field("uint8, uint16 or float32", lambda v: v in ("uint8", "uint16", "float32")),
    "mean": fields.Field("a list of numbers", fields.list_of(fields.number)),
    "std": fields.Field("a list of numbers", fields.list_of(fields.number)),
}
_NORMALIZATION = {
    "in_model": fields.Field("true or false", lambda v: isinstance(v, bool)),
    "mean": fields.Field("three numbers", fields.list_of(fields.number, 3)),
    "std": fields.Field("three positive numbers", lambda v: fields.list_of(fields.number, 3)(v) and min(v) > 0),
}
