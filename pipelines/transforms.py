"""The prepare pipeline's stages, one named PTransform each, in three modules: pipelines/reading.py (ReadPairs,
DecodePairs), pipelines/cutting.py (CutCrops, CutTiles) and pipelines/shards.py (SpreadCrops, WriteShards); here
the tags and counters they share, and the last stages. DoFns are thin wrappers around `segprep`.

    Pair (split, id, image path, mask path: from split lists or the driver's listing)
      → ReadPairs      → PairBytes                               + errors, + TiledPair (giant TIFFs: below)
      → DecodePairs    → DecodedPair                             + errors
      → CutCrops       → (split, (image_id, k, record bytes))    + per-image Stats
      → SpreadCrops    → ((split, shard), [(order, key, bytes)])
      → WriteShards    → ShardResult (temp files)
      → Finalize       → errors/*.jsonl, shards renamed into place, metadata.json last

    TiledPair (a tiled or stripped TIFF pair larger than one window: segprep/tiles.py)
      → CutTiles       → (split, (image_id, k, record bytes))    + per-image Stats, errors, failed image keys
                         (windows planned from the headers, spread over workers, cut one by one)

Every input that cannot be used leaves the main flow as an `ErrorRecord` on an "errors" output; nothing is dropped
without a trace. A tile that fails in one window has crops from its other windows: the writers drop them (by
`tiles.image_key`, a side input), so a failed image never has crops in the shards.
"""

from __future__ import annotations

import os
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics

from segprep import progress
from segprep.formats.metadata import Stats

ERRORS = "errors"  # tags of the stages' outputs
STATS = "stats"
TILED = "tiled"
FAILED = "failed"


class Counters:
    """Counts what a stage did, two ways: Beam metrics counters (namespace "segprep"), which Dataflow's UI shows and
    any runner reports, and — when `line` — a progress line on stderr every few seconds from each process doing the
    work (the DirectRunner's; on Dataflow the counters are the progress). Picklable: it travels with the DoFns."""

    def __init__(self, listed: int = 0, line: bool = False):
        self.listed, self.line = listed, line
        self.driver = os.getpid()
        self.run = uuid.uuid4().hex  # one run's counts, however many pipelines a process runs

    def count(self, name: str, n: int = 1) -> None:
        Metrics.counter("segprep", name).inc(n)
        if not self.line:
            return
        state = _PROGRESS.setdefault(self.run, {"images_done": 0, "images_failed": 0, "crops_cut": 0})
        state[name] = state.get(name, 0) + n
        if name in ("images_done", "images_failed"):
            if "bar" not in state:
                here = os.getpid() == self.driver
                state["bar"] = progress.Progress("prepare" if here else f"prepare (worker {os.getpid()})",
                                                 self.listed if here else None, "images")
            state["bar"].update(n, f"{state['images_failed']} failed, {state['crops_cut']:,} crops")


_PROGRESS: dict = {}  # per process


class MergeStats(beam.CombineFn):
    def create_accumulator(self):
        return Stats()

    def add_input(self, acc, stats):
        return acc.add(stats)

    def merge_accumulators(self, accs):
        total = Stats()
        for acc in accs:
            total.add(acc)
        return total

    def extract_output(self, acc):
        return acc


class Finalize(beam.PTransform):
    """Runs once all shards are written: errors files, shards renamed into place, metadata.json last."""

    def __init__(self, finalize_fn):
        super().__init__()
        self._finalize_fn = finalize_fn

    def expand(self, inputs):
        """{"shards": ShardResult, "stats": (split, Stats), "errors": ErrorRecord} → the metadata dict."""
        pipeline = inputs["shards"].pipeline
        return (pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(lambda _, shards, stats, errors, fn=self._finalize_fn:
                                      fn(shards, stats, errors),
                                      shards=beam.pvalue.AsList(inputs["shards"]),
                                      stats=beam.pvalue.AsList(inputs["stats"]),
                                      errors=beam.pvalue.AsList(inputs["errors"])))
