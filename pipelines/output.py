"""The output directory: refusing to mix runs, clearing an old run, and finishing a new one.

A run writes its shards under OUT/.segprep-tmp-RUN/ and only `finalize` — which runs once, after every shard is
written — moves them into OUT, writes errors/SPLIT.jsonl and then metadata.json. So OUT never holds a
half-written run under final names, and shards of an earlier run (perhaps with another shard count) are never
left beside new ones: a run refuses an OUT that holds any, unless --overwrite, which deletes them first.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

from apache_beam.io.filesystems import FileSystems

from segprep import layout
from segprep.convert import Stats
from segprep.metadata import SCHEMA_VERSION
from segprep.palette import IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What finalize needs to know about the run (picklable: it travels to a worker)."""

    output_dir: str
    temp_dir: str
    splits: tuple[str, ...]
    random_splits: tuple[str, ...]
    listed: dict  # split → number of IDs listed
    palette: dict
    crop_size: int
    image_format: str
    compressed: bool
    seed: int
    flags: dict
    started: float


def _match(pattern: str) -> list[str]:
    try:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - an absent folder matches nothing
        return []


def existing_outputs(out: str) -> tuple[list[str], list[str]]:
    """→ (files of a finished or partial run: shards, errors, metadata; leftover temp files of crashed runs)."""
    done = [p for p in _match(layout.join(out, "*")) if layout.is_shard(p) or p.endswith("/" + layout.METADATA)]
    done += _match(layout.join(out, layout.ERRORS_DIR, "*.jsonl"))
    temp = _match(layout.join(out, layout.TEMP_PREFIX + "*", "*"))
    return sorted(done), sorted(temp)


def clear(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode())


def dumps(obj: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (colours, counts)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def finalize(run: RunSpec, shards: list, stats: list, errors: list) -> dict:
    """Errors files, then shards moved into place, then metadata.json. Returns the metadata."""
    stats = dict(stats)
    by_split = {s: sorted((r for r in shards if r.split == s), key=lambda r: r.name) for s in run.splits}
    errors_by_split = {s: sorted((e for e in errors if e.split == s), key=lambda e: e.image_id) for s in run.splits}

    for split, errs in errors_by_split.items():
        if errs:
            _write_text(layout.errors_path(run.output_dir, split), "".join(e.to_json() + "\n" for e in errs))
    moves = [(r.temp_path, layout.join(run.output_dir, r.name)) for rs in by_split.values() for r in rs]
    if moves:
        FileSystems.rename([m[0] for m in moves], [m[1] for m in moves])
    leftovers = _match(layout.join(run.temp_dir, "*"))
    if leftovers:
        FileSystems.delete(leftovers)
    try:
        FileSystems.delete([run.temp_dir])
    except Exception:  # noqa: BLE001 - object stores have no folders to delete
        pass

    num_classes = len(run.palette["names"])
    splits = {}
    train_total = Stats()
    for split in run.splits:
        st = stats.get(split, Stats())
        if split in run.random_splits:
            train_total.add(st)
        counts = [int(c) for c in st.class_pixels]
        mean, std = st.rgb_mean_std()
        splits[split] = {
            "records": sum(r.records for r in by_split[split]),
            "shards": [r.name for r in by_split[split]],
            "shard_records": [r.records for r in by_split[split]],
            "bytes": sum(r.bytes for r in by_split[split]),
            "crop_mode": "random" if split in run.random_splits else "tiles",
            "images_listed": run.listed.get(split, 0),
            "images_used": st.images,
            "inputs_failed": len(errors_by_split[split]),
            "errors_file": (layout.errors_path("", split).lstrip("/") if errors_by_split[split] else None),
            "class_pixels": counts[:num_classes],
            "ignore_pixels": counts[IGNORE_LABEL],
            "source_pixels": st.source_pixels,
            "unknown_pixels_ignored": st.unknown_pixels_ignored,
            "rgb_mean": mean,
            "rgb_std": std,
        }
    if not train_total.rgb_pixels:  # no training split in this run: use every split's crops
        for st in stats.values():
            train_total.add(st)
    mean, std = train_total.rgb_mean_std()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "class_names": run.palette["names"],
        "class_colors": run.palette["colors"],
        "ignore_colors": run.palette["ignore_colors"],
        "num_classes": num_classes,
        "ignore_label": IGNORE_LABEL,
        "crop_size": run.crop_size,
        "image_format": run.image_format,
        "compression": "gzip" if run.compressed else "none",
        "seed": run.seed,
        "random_crop_splits": list(run.random_splits),
        # Mean/std over the training crops' source pixels (0..255), for input normalisation.
        "rgb_mean": mean,
        "rgb_std": std,
        "splits": splits,
        "flags": run.flags,
        "seconds": round(time.time() - run.started, 2),
    }
    _write_text(layout.metadata_path(run.output_dir), dumps(meta))
    return meta
