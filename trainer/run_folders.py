"""A training run's folder: whether a --model_dir is one (or new), what --overwrite deletes there, and nothing
else. The folder's files and their names are segprep/formats/run_dir.py's."""

from __future__ import annotations

import os

from segprep import runlock, storage
from segprep.cli import UsageError
from segprep.formats import run_dir
from trainer.common import exists, files


def check_finished(model_dir: str, overwrite: bool) -> None:
    finished = exists(f"{model_dir}/{run_dir.MODEL}") and not exists(f"{model_dir}/{run_dir.BACKUP}")
    if finished and not overwrite:
        raise UsageError(f"--model_dir {model_dir} holds a finished run (model.keras); pass --overwrite to train "
                         "it again, or choose another --model_dir.")


def is_run_dir(model_dir: str) -> bool:
    """True for a folder a segprep run wrote: its marker, or (runs older than the marker) segprep.json or a
    backup's state.json."""
    return any(exists(f"{model_dir}/{name}") for name in (run_dir.MARKER, run_dir.INFO, run_dir.STATE))


def check_run_dir(model_dir: str) -> None:
    """A --model_dir that holds anything but a segprep run is refused before anything is written or deleted in it:
    a run deletes its backup/ and replaces serving/ there, and --overwrite deletes a run's files."""
    if not storage.is_remote(model_dir) and os.path.lexists(model_dir) and not os.path.isdir(model_dir):
        raise UsageError(f"--model_dir {model_dir} is a file, not a folder: choose another --model_dir.")
    if not files.isdir(model_dir):
        return
    names = sorted(n for n in files.listdir(model_dir) if n != runlock.LOCK_NAME)
    if names and not is_run_dir(model_dir):
        raise UsageError(f"--model_dir {model_dir} holds files no segprep run wrote (e.g. {names[0]}), and a run "
                         "deletes and replaces files in its dir: choose a new or empty --model_dir.")
    links = [n for n in names if _run_file(n) and not storage.is_remote(model_dir)
             and os.path.islink(os.path.join(model_dir, n))]
    if links:
        raise UsageError(f"--model_dir {model_dir} holds {links[0]}, a symbolic link to "
                         f"{os.path.realpath(os.path.join(model_dir, links[0]))}, under a name a run writes and "
                         "deletes: a run never writes or deletes through a link; remove the link, or choose another "
                         "--model_dir.")


def _run_file(name: str) -> bool:
    """Whether a run (or `evaluate`) writes `name` in its run dir: what --overwrite deletes."""
    return name in run_dir.FOLDERS or name in run_dir.FILES or run_dir.is_eval_file(name)


def clear_run(model_dir: str) -> None:
    """--overwrite: everything a run and `evaluate` wrote in `model_dir`, so the new run starts clean; only in a
    segprep run's folder without links under those names (see `check_run_dir`)."""
    if not files.isdir(model_dir):
        return
    check_run_dir(model_dir)
    for name in files.listdir(model_dir):
        path = f"{model_dir}/{name}"
        if name in run_dir.FOLDERS:
            files.rmtree(path)
        elif _run_file(name):
            files.remove([path])
