"""Where predictions go, and the rule that keeps a user's files: predict writes a file only where none is, or where
the file is its own earlier prediction of the same input.

Names: an input's id (its file name without the extension, or a split list's id) gives ID.png and ID_overlay.jpg;
a tiled TIFF larger than --max_pixels, predicted window by window, gives ID.tif. When two inputs share an id (a.jpg
and a.png in one folder), each keeps its extension in the name instead: a.jpg.png, a.jpg_overlay.jpg and
a.png.png, a.png_overlay.jpg. Names that still collide are refused before anything is written.

What predict wrote is recorded in OUT/.segprep-predictions.jsonl (segprep/formats/predictions.py): each file's
name, the input it is the prediction of, its size and SHA-256. A file there is predict's to replace only while all of these still hold;
any other file is left alone and named, and the run stops before writing anything. In a folder that is both input
and output, the files recorded there are never read as inputs.
"""

from __future__ import annotations

import dataclasses
import os

from segprep import storage
from segprep.formats import predictions
from segprep.formats.predictions import MANIFEST, Record
from segprep.cli import UsageError
from trainer import common

SUFFIXES = (".png", "_overlay.jpg")  # what an image predicted whole gives
WINDOWED = ".tif"  # what a tiled TIFF above --max_pixels, or a georeferenced input, gives
PROBABILITIES = "_probs.tif"  # with --probabilities: a band of class probabilities × 255 per class
TIFF_EXTS = (".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Target:
    """One input and the names its outputs may take (relative to the output dir)."""

    name: str  # the stem of its outputs
    path: str  # the input file
    source: str  # the input, as the manifest records it: an absolute local path or a URL
    more: tuple[str, ...] = ()  # suffixes the run's flags add (--probabilities)

    @property
    def reserved(self) -> list[str]:
        """Every name this input's outputs may take: a TIFF may be predicted window by window (ID.tif)."""
        names = [self.name + s for s in SUFFIXES + self.more]
        return names + [self.name + WINDOWED] if self.path.lower().endswith(TIFF_EXTS) else names


def source_of(path: str) -> str:
    return path if storage.is_remote(path) else os.path.abspath(path)


def plan(inputs: list[tuple[str, str]], more: tuple[str, ...] = ()) -> list[Target]:
    """[(id, path)] → a Target each; ids that two inputs share keep their extension (see the module docstring).
    A UsageError when names still collide."""
    count: dict[str, int] = {}
    for image_id, _ in inputs:
        count[image_id] = count.get(image_id, 0) + 1
    targets = []
    for image_id, path in inputs:
        name = image_id if count[image_id] == 1 else image_id + os.path.splitext(path)[1]
        targets.append(Target(name, path, source_of(path), more))
    owner: dict[str, Target] = {}
    for target in targets:
        for name in target.reserved:
            other = owner.setdefault(name, target)
            if other is not target:
                raise UsageError(f"{other.path} and {target.path} would both be predicted as {name}: rename one "
                                 "of them, or predict them into different --output_dir folders.")
    return targets


class Manifest:
    """OUT/.segprep-predictions.jsonl: what predict wrote in OUT (see the module docstring)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir.rstrip("/")
        self.path = f"{self.out_dir}/{MANIFEST}"
        self.records: dict[str, Record] = {}
        self._pending: list[Record] = []
        if not storage.is_remote(self.path) and os.path.islink(self.path):
            raise UsageError(f"{self.path} is a symbolic link: predict appends to this file and never writes "
                             "through a link; remove it, or choose another --output_dir.")
        if common.exists(self.path):
            try:
                self.records = predictions.parse(common.read_bytes(self.path).decode("utf-8", "replace"), self.path)
            except predictions.ManifestError as e:
                raise UsageError(str(e)) from None

    def ours(self, name: str, source: str) -> bool:
        """Whether OUT/name is predict's own earlier prediction of `source`, unchanged since it wrote it."""
        record = self.records.get(name)
        if record is None or record.input != source:
            return False
        with common.files.open_read(f"{self.out_dir}/{name}") as f:
            return record.matches(f)

    def add(self, name: str, source: str, data) -> None:
        """`data`: the file's bytes, or the written file open for binary reading."""
        record = Record.of(name, source, data)
        self.records[name] = record
        self._pending.append(record)

    def save(self) -> None:
        """Locally, the new records appended (a killed run leaves every record of what it finished); on an object
        store, which cannot append, the whole file rewritten."""
        if not self._pending:
            return
        if storage.is_remote(self.path):
            common.files.write_text(self.path, "".join(r.line() for r in self.records.values()))
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(r.line() for r in self._pending)
        self._pending = []


def exists(path: str) -> bool:
    return os.path.lexists(path) if not storage.is_remote(path) else common.exists(path)


def check(targets: list[Target], manifest: Manifest) -> None:
    """A UsageError naming the first file predict would replace that is not its own prediction of that input."""
    for target in targets:
        for name in target.reserved:
            path = f"{manifest.out_dir}/{name}"
            if exists(path) and (os.path.islink(path) or not manifest.ours(name, target.source)):
                raise UsageError(f"{path} exists and is not segprep's prediction of {target.path}; predict never "
                                 "replaces a file it did not write: move it away, or choose another --output_dir.")


def exclude_predictions(inputs: list[tuple[str, str]], manifest: Manifest) -> list[tuple[str, str]]:
    """The inputs that are not predict's own outputs in the output dir (when it is also the input folder)."""
    written = {os.path.normpath(f"{manifest.out_dir}/{name}") for name in manifest.records}
    return [(i, p) for i, p in inputs if os.path.normpath(p) not in written]
