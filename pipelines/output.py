"""The output directory: refusing to mix runs, clearing an old run, and finishing a new one.

A run writes its shards under OUT/.segprep-tmp-RUN/ and only `finalize` — which runs once, after every shard is
written — writes errors/SPLIT.jsonl, adds the empty shards of each split, moves the shards into OUT and then
writes metadata.json. So OUT never holds a half-written run under final names, and shards of an earlier run
(perhaps with another shard count) are never left beside new ones: a run refuses an OUT that holds any, unless
--overwrite, which deletes them first.

`finalize` may run more than once for one run (a runner retries a failed bundle): every step is idempotent, so a
retry finishes what an attempt started, and a shard already moved into place is done, not an error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

from segprep import layout, metadata, storage
from segprep.convert import Stats
from segprep.palette import Palette


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What finalize needs to know about the run (picklable: it travels to a worker)."""

    output_dir: str
    temp_dir: str
    splits: tuple[str, ...]
    random_splits: tuple[str, ...]
    listed: dict  # split → number of IDs listed
    palette: Palette
    crop_size: int
    image_format: str
    compressed: bool
    seed: int
    num_shards: int  # per split; 0 = automatic (then each split's count is in its shards' names)
    flags: dict
    started: float


def existing_outputs(out: str) -> tuple[list[str], list[str]]:
    """→ (files of a finished or partial run: shards, errors, metadata; leftover temp files of crashed runs)."""
    done = [p for p in storage.match(layout.join(out, "*")) if layout.is_shard(p) or p.endswith("/" + layout.METADATA)]
    done += storage.match(layout.join(out, layout.ERRORS_DIR, "*.jsonl"))
    temp = storage.match(layout.join(out, layout.TEMP_PREFIX + "*", "*"))
    temp += storage.match(layout.join(out, layout.TEMP_PREFIX + "*", SPILL_DIR, "*"))  # a crashed local run's
    # A local run killed before writing any file leaves its temp folder (and spill/) empty: named as it is.
    holding = {p[len(out) + 1:].split("/", 1)[0] for p in temp}
    temp += [f for f in storage.local_folders(out, layout.TEMP_PREFIX) if os.path.basename(f) not in holding]
    return sorted(done), sorted(temp)


SPILL_DIR = "spill"  # a local run's spill files: OUT/.segprep-tmp-RUN/spill/


def clear(paths: list[str]) -> None:
    """Deletes `paths` (files, and local temp folders holding none), then the temp folders they leave empty (local
    ones; an object store has no folders). A folder is only ever removed empty."""
    empty = [p for p in paths if not storage.is_remote(p) and os.path.isdir(p)]
    files = [p for p in paths if p not in empty]
    if files:
        storage.remove(files)
    folders = {f for p in empty for f in (p, os.path.join(p, SPILL_DIR))}
    for p in files:
        if storage.is_remote(p):
            continue
        folder = os.path.dirname(p)
        while os.path.basename(folder).startswith(layout.TEMP_PREFIX) or (
                os.path.basename(folder) == SPILL_DIR
                and os.path.basename(os.path.dirname(folder)).startswith(layout.TEMP_PREFIX)):
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            pass


def _write_text(path: str, text: str) -> None:
    storage.write_bytes(path, text.encode())


def write_errors(run: RunSpec, errors: list) -> dict[str, int]:
    """errors/SPLIT.jsonl for each split with failed inputs, sorted by id; → {split: failed inputs}."""
    failed = {}
    for split in run.splits:
        errs = sorted((e for e in errors if e.split == split), key=lambda e: e.image_id)
        failed[split] = len(errs)
        if errs:
            _write_text(layout.errors_path(run.output_dir, split), "".join(e.to_json() + "\n" for e in errs))
    return failed


def split_shards(run: RunSpec, shards: list) -> dict[str, list[metadata.Shard]]:
    """Every shard of every split, in order: the written ones and, for shard numbers that got no crops, empty
    files made here, so each split has exactly its `-of-N` count of files. Moves them all into OUT."""
    present = {storage.basename(p) for p in storage.match(layout.join(run.temp_dir, "*"))}
    final = {storage.basename(p) for p in storage.match(layout.join(run.output_dir, "*")) if layout.is_shard(p)}
    result, moves = {}, []
    for split in run.splits:
        written = {r.shard: r for r in shards if r.split == split}
        counts = {r.num_shards for r in written.values()}
        if len(counts) > 1:
            raise RuntimeError(f"split {split}: shards of different counts {sorted(counts)}")
        n = run.num_shards or (counts.pop() if counts else 1)
        result[split] = []
        for i in range(n):
            name = layout.shard_name(split, i, n, run.compressed)
            if i in written:
                result[split].append(metadata.Shard(name, written[i].records, written[i].bytes))
            else:
                if name not in present and name not in final:
                    storage.create(layout.join(run.temp_dir, name), gzip=run.compressed).close()
                    present.add(name)
                result[split].append(metadata.Shard(name, 0, 0))
            if name in present:
                moves.append((layout.join(run.temp_dir, name), layout.join(run.output_dir, name)))
            elif name not in final:  # neither in the temp dir nor in place: lost, and nothing can bring it back
                raise RuntimeError(f"shard {name} is neither in {run.temp_dir} nor in {run.output_dir}")
    if moves:
        storage.rename([m[0] for m in moves], [m[1] for m in moves])
    return result


def remove_temp_dir(run: RunSpec) -> None:
    leftovers = storage.match(layout.join(run.temp_dir, "*"))
    if leftovers:
        storage.remove(leftovers)
    if not storage.is_remote(run.temp_dir) and os.path.isdir(run.temp_dir):  # an object store has no folders
        shutil.rmtree(run.temp_dir, ignore_errors=True)  # our own .segprep-tmp-RUN (and its spill/)


def finalize(run: RunSpec, shards: list, stats: list, errors: list) -> dict:
    """Errors files, then every shard (empty ones included) moved into place, then metadata.json last. Safe to
    run again after a partial attempt. Returns the metadata."""
    stats = dict(stats)
    failed = write_errors(run, errors)
    by_split = split_shards(run, shards)
    remove_temp_dir(run)
    splits = {split: metadata.SplitResult(shards=by_split[split], stats=stats.get(split, Stats()),
                                          random_crops=split in run.random_splits,
                                          images_listed=run.listed.get(split, 0), inputs_failed=failed[split])
              for split in run.splits}
    meta = metadata.build(palette=run.palette, crop_size=run.crop_size, image_format=run.image_format,
                          compressed=run.compressed, seed=run.seed, splits=splits, flags=run.flags,
                          seconds=time.time() - run.started)
    _write_text(layout.metadata_path(run.output_dir), metadata.dumps(meta))
    return meta
