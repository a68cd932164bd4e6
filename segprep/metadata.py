"""metadata.json: what a prepare run wrote, and the trainer's source of truth.

Written last by the pipeline (its presence means the run finished); read by the trainer for shard names, record
counts (so steps_per_epoch is never guessed), classes, colours and the RGB mean/std of the training crops.
"""

from __future__ import annotations

import json

from segprep import layout
from segprep.palette import IGNORE_LABEL, Palette

SCHEMA_VERSION = 1


class MetadataError(ValueError):
    """metadata.json is missing, unreadable or not one this version understands."""


def parse(text: str | bytes, where: str = "metadata.json") -> dict:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetadataError(f"{where} is not valid JSON ({e}); re-run `python -m pipelines.prepare`.") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise MetadataError(f"{where} has schema_version {version!r}; this segprep reads version {SCHEMA_VERSION}. "
                            "Re-run `python -m pipelines.prepare --overwrite` with this version.")
    for key in ("splits", "class_names", "class_colors", "crop_size"):
        if key not in meta:
            raise MetadataError(f"{where} has no {key!r}; it was not written by `python -m pipelines.prepare`.")
    return meta


def palette(meta: dict) -> Palette:
    return Palette(names=tuple(meta["class_names"]), colors=tuple(tuple(c) for c in meta["class_colors"]),
                   ignore_colors=tuple(tuple(c) for c in meta.get("ignore_colors", ())))


def split(meta: dict, name: str, where: str = "metadata.json") -> dict:
    if name not in meta["splits"]:
        raise MetadataError(f"{where} has no split {name!r}; it has: {', '.join(sorted(meta['splits'])) or 'none'}.")
    return meta["splits"][name]


def shard_paths(meta: dict, data_dir: str, name: str) -> list[str]:
    """The split's shard files, by the names the run recorded (never a glob, which would also match stale
    shards of an earlier run)."""
    return [layout.join(data_dir, shard) for shard in split(meta, name)["shards"]]


def class_names_with_ignore(meta: dict) -> dict[int, str]:
    names = dict(enumerate(meta["class_names"]))
    names[IGNORE_LABEL] = "ignore"
    return names
