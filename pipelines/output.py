"""The output directory: what in it is segprep's, refusing to mix runs, clearing an old run, finishing a new one.

A run marks its temp dir OUT/.segprep-tmp-RUN/ first (`mark`), writes its shards there, and only `finalize` — which
runs once, after every shard is written — writes a journal of what it will put into OUT, errors/SPLIT.jsonl, adds
the empty shards of each split, moves the shards into OUT, writes metadata.json and removes the temp dir. So OUT
never holds a half-written run under final names, and what a run killed at any point leaves is known to be
segprep's (`inventory`): --overwrite deletes that and what an earlier metadata.json records, never anything else,
never through a link; a file under a name a run writes that no run recorded stops the run before anything is
deleted.

`finalize` may run more than once for one run (a runner retries a failed bundle): every step is idempotent, so a
retry finishes what an attempt started, and a shard already moved into place is done, not an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time

from segprep import layout, runlock, storage
from segprep.cli import UsageError
from segprep.formats import metadata
from segprep.formats import tfds_info
from segprep.formats.metadata import ERRORS_DIR, METADATA, Stats, errors_path, metadata_path
from segprep.formats.shards import TEMP_JOURNAL, TEMP_MARKER, TEMP_PREFIX, ShardFormat, is_shard
from segprep.convert import ConvertConfig


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What finalize needs to know about the run (picklable: it travels to a worker)."""

    output_dir: str
    temp_dir: str
    splits: tuple[str, ...]
    random_splits: tuple[str, ...]
    listed: dict  # split → number of IDs listed
    config: ConvertConfig  # the crops': palette, size, image format, seed
    shard_format: ShardFormat  # TFRecord (gzipped or not) or ArrayRecord
    num_shards: int  # per split; 0 = automatic (then each split's count is in its shards' names)
    flags: dict
    started: float
    repeated: dict = dataclasses.field(default_factory=dict)  # split → ids its list repeats (each used once)


SPILL_DIR = "spill"  # a local run's spill files: OUT/.segprep-tmp-RUN/spill/


@dataclasses.dataclass
class Inventory:
    """What an output dir holds, sorted by who wrote it. Only `recorded` and `unfinished` are ever deleted
    (--overwrite); everything else stays where it is."""

    recorded: list[str] = dataclasses.field(default_factory=list)  # a finished run's: metadata.json, shards, errors
    unfinished: list[str] = dataclasses.field(default_factory=list)  # segprep temp dirs' files, journal-named files
    temp_dirs: list[str] = dataclasses.field(default_factory=list)  # segprep temp dirs (local), removed once empty
    blocking: list[str] = dataclasses.field(default_factory=list)  # not segprep's, under a name a run writes
    foreign: list[str] = dataclasses.field(default_factory=list)  # not segprep's, left alone and named

    def ours(self) -> list[str]:
        return self.recorded + self.unfinished


def inventory(out: str, splits: tuple[str, ...] | list[str] = ()) -> Inventory:
    """Sorts what `out` holds (see Inventory). Never follows a symbolic link: a link is never segprep's. `splits`
    are the new run's: a file no run recorded at errors/SPLIT.jsonl of one of them is in the way."""
    inv = Inventory()
    remote = storage.is_remote(out)
    top = _top_entries(out, remote)  # {name: "file" | "dir" | "link" | "other"}
    recorded: set[str] = set()
    if top.get(METADATA) == "file":
        recorded = set(metadata.recorded_files(storage.read_bytes(layout.join(out, METADATA))) or ())
    journaled: set[str] = set()
    for name, kind in sorted(top.items()):
        if not name.startswith(TEMP_PREFIX):
            continue
        path = layout.join(out, name)
        if kind != "dir":
            inv.foreign.append(path)
            continue
        files, folders, odd = _walk(path, remote)
        if layout.join(path, TEMP_MARKER) in files or not files:  # ours, or nothing in it to lose
            inv.unfinished += files
            inv.temp_dirs += folders
            inv.foreign += odd
            if layout.join(path, TEMP_JOURNAL) in files:
                journaled |= _journal_names(layout.join(path, TEMP_JOURNAL))
        else:
            inv.foreign.append(path)
    for name, kind in sorted(top.items()):
        path = layout.join(out, name)
        if name.startswith(TEMP_PREFIX) or name == runlock.LOCK_NAME:
            continue
        if name == ERRORS_DIR and kind == "dir":
            _sort_errors(inv, out, remote, recorded, journaled, splits)
        elif kind == "file" and name in recorded:
            inv.recorded.append(path)
        elif kind == "file" and name in journaled:
            inv.unfinished.append(path)
        elif is_shard(name) or name in (METADATA, ERRORS_DIR, *tfds_info.FILES):
            inv.blocking.append(path)
        else:
            inv.foreign.append(path)
    return inv


def _sort_errors(inv: Inventory, out: str, remote: bool, recorded: set[str], journaled: set[str], splits) -> None:
    for name, kind in sorted(_entries(layout.join(out, ERRORS_DIR), remote).items()):
        rel = f"{ERRORS_DIR}/{name}"
        path = layout.join(out, rel)
        if kind == "file" and rel in recorded:
            inv.recorded.append(path)
        elif kind == "file" and rel in journaled:
            inv.unfinished.append(path)
        elif name in {f"{s}.jsonl" for s in splits}:
            inv.blocking.append(path)
        else:
            inv.foreign.append(path)


def _top_entries(folder: str, remote: bool) -> dict[str, str]:
    """{name: "file" | "dir" | "link" | "other"} of what is directly in `folder` (nothing when it is absent)."""
    if not remote:
        return _entries(folder, remote)
    prefix = folder.rstrip("/") + "/"
    found = {storage.basename(p): "file" for p in storage.match(prefix + "*")}
    for path in storage.match(prefix + "*/**"):  # an object store's folders are the prefixes of deeper names
        found.setdefault(path[len(prefix):].split("/", 1)[0], "dir")
    return found


def _entries(folder: str, remote: bool) -> dict[str, str]:
    if remote:
        return {storage.basename(p): "file" for p in storage.match(layout.join(folder, "*"))}
    try:
        with os.scandir(folder) as it:
            return {e.name: _kind(e) for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _kind(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def _walk(folder: str, remote: bool) -> tuple[list[str], list[str], list[str]]:
    """(regular files, folders, links and other odd entries) under `folder`, never through a link."""
    if remote:  # an object store has files only
        return storage.match(layout.join(folder, "**")), [], []
    files, folders, odd = [], [], []
    for here, dirs, names in os.walk(folder):  # os.walk does not descend into links to folders
        folders.append(here)
        for name in dirs + names:
            path = os.path.join(here, name)
            if os.path.islink(path) or not (os.path.isdir(path) or os.path.isfile(path)):
                odd.append(path)
            elif name in names:
                files.append(path)
    return files, folders, odd


def _journal_names(path: str) -> set[str]:
    try:
        names = json.loads(storage.read_bytes(path))
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def clear(inv: Inventory) -> int:
    """Deletes what `inv` names as segprep's (never a link, nothing outside the output dir), then the temp folders
    that leaves empty (a folder is only ever removed empty); → files deleted."""
    files = inv.ours()
    if files:
        storage.remove(files)
    for folder in sorted(inv.temp_dirs, key=len, reverse=True):  # deepest first
        try:
            os.rmdir(folder)
        except OSError:  # not empty (a link left in it), or gone
            pass
    return len(files)


def mark(run: RunSpec) -> None:
    """Makes the run's temp dir with its marker in it, before anything else goes there: a folder holding the marker
    is segprep's (--overwrite may empty it); one that does not is left alone."""
    text = json.dumps({"written_by": "segprep pipelines.prepare", "pid": os.getpid(), "host": socket.gethostname(),
                       "started": run.started}) + "\n"
    path = layout.join(run.temp_dir, TEMP_MARKER)
    if storage.is_remote(path):
        storage.write_bytes(path, text.encode())
        return
    os.makedirs(run.temp_dir)
    with open(path, "x") as f:  # its name marks the folder, not its content: a kill mid-write still leaves it
        f.write(text)


def _write_text(path: str, text: str) -> None:
    storage.write_bytes(path, text.encode())


def write_errors(run: RunSpec, errors: list) -> dict[str, int]:
    """errors/SPLIT.jsonl for each split with failed inputs, sorted by id; → {split: failed inputs}."""
    failed = {}
    for split in run.splits:
        errs = sorted((e for e in errors if e.split == split), key=lambda e: e.image_id)
        failed[split] = len(errs)
        if errs:
            _write_text(errors_path(run.output_dir, split), "".join(e.to_json() + "\n" for e in errs))
    return failed


def plan_shards(run: RunSpec, shards: list) -> dict[str, list[tuple[str, object]]]:
    """{split: [(final name, its ShardResult or None for a shard number that got no crops)]}: exactly the
    `-of-N` count of each split."""
    result = {}
    for split in run.splits:
        written = {r.shard: r for r in shards if r.split == split}
        counts = {r.num_shards for r in written.values()}
        if len(counts) > 1:
            raise RuntimeError(f"split {split}: shards of different counts {sorted(counts)}")
        n = run.num_shards or (counts.pop() if counts else 1)
        result[split] = [(run.shard_format.name(split, i, n), written.get(i)) for i in range(n)]
    return result


def write_journal(run: RunSpec, planned: dict, failed_splits: list[str]) -> None:
    """Names, in the run's temp dir, every file finalize is about to put into OUT: a run killed while moving them
    leaves a record that they are segprep's, so --overwrite can remove them and nothing else."""
    names = [name for entries in planned.values() for name, _ in entries]
    names += [errors_path("", split).lstrip("/") for split in failed_splits]
    _write_text(layout.join(run.temp_dir, TEMP_JOURNAL), json.dumps(names) + "\n")


def split_shards(run: RunSpec, planned: dict) -> dict[str, list[metadata.Shard]]:
    """Every planned shard of every split, in order: the written ones and, for shard numbers that got no crops,
    empty files made here. Moves them all into OUT."""
    present = {storage.basename(p) for p in storage.match(layout.join(run.temp_dir, "*"))}
    final = {storage.basename(p) for p in storage.match(layout.join(run.output_dir, "*")) if is_shard(p)}
    result, moves = {}, []
    for split, entries in planned.items():
        result[split] = []
        for name, written in entries:
            if written is not None:
                result[split].append(metadata.Shard(name, written.records, written.bytes))
            else:
                if name not in present and name not in final:
                    run.shard_format.write(layout.join(run.temp_dir, name), ())
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
    """A journal of what goes into OUT, errors files, every shard (empty ones included) moved into place,
    metadata.json, and last the temp dir removed. Safe to run again after a partial attempt. Returns the
    metadata."""
    stats = dict(stats)
    planned = plan_shards(run, shards)
    write_journal(run, planned, sorted({e.split for e in errors}))
    failed = write_errors(run, errors)
    by_split = split_shards(run, planned)
    splits = {split: metadata.SplitResult(shards=by_split[split], stats=stats.get(split, Stats()),
                                          random_crops=split in run.random_splits,
                                          images_listed=run.listed.get(split, 0), inputs_failed=failed[split],
                                          repeated_ids=len(run.repeated.get(split, ())))
              for split in run.splits}
    config = run.config
    meta = metadata.build(palette=config.palette, crop_size=config.crop_size, image_format=config.image_format,
                          shard_format=run.shard_format, seed=config.seed, splits=splits, flags=run.flags,
                          extra_inputs=config.extra_inputs,
                          seconds=time.time() - run.started)
    _write_text(metadata_path(run.output_dir), metadata.dumps(meta))
    for name, text in tfds_info.texts(meta).items():  # recorded in metadata.json, so written after it
        _write_text(layout.join(run.output_dir, name), text)
    remove_temp_dir(run)  # after metadata.json: a run killed before it still has its journal
    return meta


def check_folder(flag: str, folder: str) -> None:
    """A local folder a run will write in must be one (or not exist yet)."""
    if not storage.is_remote(folder) and os.path.lexists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{flag} {folder} is a file, not a folder: choose another {flag}.")


def check_output(out: str, overwrite: bool, splits) -> Inventory:
    """What --output_dir holds; a UsageError when the run may not write there: a file no segprep run recorded under
    a name the run writes (never replaced), or an earlier run without --overwrite (named by segprep's files only)."""
    inv = inventory(out, splits)
    if inv.blocking:
        more = f" (and {len(inv.blocking) - 1} more)" if len(inv.blocking) > 1 else ""
        raise UsageError(f"--output_dir {out} holds {_rel(out, inv.blocking[0])}{more}, which no segprep run "
                         "recorded, under a name prepare writes; prepare never replaces what it did not write: move "
                         "it elsewhere, or choose another --output_dir.")
    earlier = inv.recorded + [p for p in inv.unfinished if not _rel(out, p).startswith(TEMP_PREFIX)]
    if earlier and not overwrite:
        shards = [p for p in earlier if is_shard(p)]
        what = "a finished segprep run" if inv.recorded else "files of an unfinished segprep run"
        example = f", e.g. {_rel(out, shards[0])}" if shards else ""
        raise UsageError(f"--output_dir {out} already holds {what} ({len(earlier)} files: {len(shards)} shards"
                         f"{example}); pass --overwrite to delete them (and only them), or choose another "
                         "--output_dir.")
    return inv


def _rel(out: str, path: str) -> str:
    return path[len(out.rstrip("/")) + 1:] if path.startswith(out.rstrip("/") + "/") else path


def clear_output(out: str, overwrite: bool, inv: Inventory) -> None:
    if overwrite:
        deleted = clear(inv)
        left = [_rel(out, p) for p in inv.foreign]
        if deleted or left:
            kept = ""
            if left:
                shown = ", ".join(left[:4]) + (f" (+{len(left) - 4} more)" if len(left) > 4 else "")
                kept = f"; left in place {len(left)} that no segprep run recorded: {shown}"
            print(f"prepare: --overwrite: deleted {deleted} files of earlier segprep runs in {out}{kept}",
                  file=sys.stderr)
    elif inv.unfinished or inv.temp_dirs:  # a run killed before its marker leaves an empty temp dir
        folders = sorted({_rel(out, p).split("/", 1)[0] for p in inv.unfinished + inv.temp_dirs
                          if _rel(out, p).startswith(TEMP_PREFIX)})
        print(f"prepare: {out} holds the temp files of an unfinished run ({', '.join(folders)}: "
              f"{len(inv.unfinished)} files); --overwrite removes them", file=sys.stderr)
