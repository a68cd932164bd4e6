"""The prepare pipeline's cutting stages: decoded pairs → crop records, and giant TIFF pairs → crop records window by
window.

    DecodedPair  → CutCrops  → (split, (image_id, k, record bytes))  + per-image Stats
    TiledPair    → CutTiles  → (split, (image_id, k, record bytes))  + per-image Stats, errors, failed image keys

DoFns are thin wrappers around `segprep` (convert.encode_crops, tiles.cut_window); the stage map of the whole
pipeline is in pipelines/transforms.py.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.transforms import ERRORS, FAILED, STATS, Counters
from segprep import storage, tiles
from segprep.convert import ConvertConfig, block_crops, encode_crops
from segprep.formats.metadata import ErrorRecord, Stats, grid_entry


class _CutFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, random_splits: frozenset[str], progress_: Counters):
        self._config = config
        self._random_splits = random_splits
        self._progress = progress_

    def process(self, element):
        split, image_id, image, classes, source = (element.split, element.image_id, element.image,
                                                   element.classes, element.stats)
        total = Stats().add(source)
        if element.grid is not None:
            total.grids = {image_id: grid_entry(element.grid, *classes.shape)}
        if self._config.split_blocks and split in self._random_splits:  # one image in both splits, by blocks
            totals = {split: total, "val": Stats()}
            for part, k, record, stats in block_crops(image_id, image, classes, self._config, bgr=True,
                                                      rasters=element.extras, nodata=element.nodata,
                                                      grid=element.grid, empty=element.empty):
                totals[part].add(stats)
                if record is not None:
                    yield part, (image_id, k, record.serialize())
            self._progress.count("crops_cut", total.crops + totals["val"].crops)
            self._progress.count("images_done")
            for part, stats in totals.items():
                yield beam.pvalue.TaggedOutput(STATS, (part, stats))
            return
        for k, record, stats in encode_crops(image_id, image, classes, self._config, split in self._random_splits,
                                             bgr=True, rasters=element.extras, nodata=element.nodata,
                                             grid=element.grid, empty=element.empty):
            total.add(stats)
            if record is None:  # counted only: an empty tile skipped, draws rejected for no data
                continue
            yield split, (image_id, k, record.serialize())
        self._progress.count("crops_cut", total.crops)
        self._progress.count("images_done")
        yield beam.pvalue.TaggedOutput(STATS, (split, total))


class CutCrops(beam.PTransform):
    """Cuts windows (random crops for training splits, covering tiles otherwise) and encodes each as a record."""

    def __init__(self, config: ConvertConfig, random_splits: frozenset[str], progress_: Counters | None = None):
        super().__init__()
        self._config = config
        self._random_splits = random_splits
        self._progress = progress_ or Counters()

    def expand(self, decoded):
        """DecodedPair → (split, (image_id, k, serialized Example)); (split, Stats) on "stats"."""
        return decoded | beam.ParDo(_CutFn(self._config, self._random_splits, self._progress)).with_outputs(
            STATS, main="crops")


class _CutWindowFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, random_splits: frozenset[str], progress_: Counters):
        self._config = config
        self._random_splits = random_splits
        self._progress = progress_

    def start_bundle(self):
        self._open = {}  # files → (image regions, mask regions): windows of one tile often share a bundle

    def _regions(self, files):
        if files not in self._open:
            self._close()
            opened = []
            try:
                for path in files:
                    opened.append(tiles.TiffRegions(storage.open_read(path)))
            except BaseException:
                for regions in opened:
                    regions.close()
                raise
            self._open[files] = tuple(opened)
        return self._open[files]

    def _close(self):
        for regions in getattr(self, "_open", {}).values():
            for r in regions:
                r.close()
        self._open = {}

    def process(self, window: tiles.Window):
        training = window.split in self._random_splits
        try:
            image, mask, *extra = self._regions(window.files)
            out, summary = tiles.cut_window(window, image, mask, self._config, training, tuple(extra))
        except Exception as e:  # noqa: BLE001 - a file that changed or vanished mid-run: this tile's error
            out, summary = [], tiles.Summary(error=(window.number, "unreadable_image",
                                                    f"cannot read the tile: {type(e).__name__}: {e}",
                                                    tiles.where(window)), faults=1)
        for k, data in out:
            yield window.split, (window.image_id, k, data)
        self._progress.count("crops_cut", len(out))
        yield beam.pvalue.TaggedOutput(STATS, (window.key, (window, summary)))

    def finish_bundle(self):
        self._close()

    def teardown(self):
        self._close()


class _AddSummaries(beam.CombineFn):
    """(a window of the tile, its summary) → (the tile's lowest-numbered window, the summaries added)."""

    def create_accumulator(self):
        return None, tiles.Summary()

    def add_input(self, acc, value):
        window, summary = value
        return _first(acc[0], window), acc[1].add(summary)

    def merge_accumulators(self, accs):
        window, total = None, tiles.Summary()
        for w, summary in accs:
            window = _first(window, w)
            total.add(summary)
        return window, total

    def extract_output(self, acc):
        return acc


def _first(a: tiles.Window | None, b: tiles.Window | None) -> tiles.Window | None:
    return b if a is None or (b is not None and b.number < a.number) else a


class CutTiles(beam.PTransform):
    """Cuts tiled pairs window by window (segprep/tiles.py): windows planned from the headers, spread over the
    workers by a reshuffle, so one giant tile is many work items; the windows' summaries are added per tile. With
    --oversample_fraction, a training tile's oversampled crops are then planned from the named classes' pixels its
    windows found, and cut by a second round of windows."""

    def __init__(self, config: ConvertConfig, random_splits: frozenset[str], progress_: Counters | None = None):
        super().__init__()
        self._config = config
        self._random_splits = random_splits
        self._progress = progress_ or Counters()

    def expand(self, pairs):
        """TiledPair → {"crops": [PCollections of (split, (image_id, k, serialized Example))], "stats": (split,
        Stats), "errors": ErrorRecord, "failed": the `tiles.image_key` of each failed tile}. The crops come as one
        PCollection a round, for the spill path to spill each on its own (see prepare.build)."""
        config, random_splits, progress_ = self._config, self._random_splits, self._progress

        # A second round of windows: oversampled crops, or --split_by blocks (whose val blocks are known once the
        # first round found which blocks hold data).
        oversample = (config.oversample_fraction > 0 or bool(config.split_blocks)) and bool(random_splits)

        def finish(key, value, second=False):
            (split, image_id), (window, summary) = key, value
            stats, error = tiles.combine(summary, config)
            if not second:
                progress_.count("images_done" if error is None else "images_failed")
            if error is not None:
                yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(split, image_id, *error, window.files))
                yield beam.pvalue.TaggedOutput(FAILED, tiles.image_key(split, image_id))
                return
            if second:  # the crops' stats only: the tile's own were counted by the first round
                stats = summary.stats
            yield beam.pvalue.TaggedOutput(STATS, (split, stats))
            if oversample and not second and split in random_splits:
                if config.split_blocks:
                    windows, train_counts, val_counts = tiles.plan_blocks(window, summary.present, config)
                    yield beam.pvalue.TaggedOutput(STATS, (split, train_counts))
                    yield beam.pvalue.TaggedOutput(STATS, (tiles.VAL, val_counts))
                    yield from windows
                else:
                    yield from tiles.plan_oversampled(window, summary.positions, config)

        def round_(windows, name, second=False):
            cut = (windows
                   | f"Spread{name}" >> beam.Reshuffle()  # one tile's windows fan out over the workers
                   | f"Cut{name}" >> beam.ParDo(_CutWindowFn(config, random_splits, progress_)).with_outputs(
                       STATS, main="crops"))
            done = (cut[STATS]
                    | f"Add{name}" >> beam.CombinePerKey(_AddSummaries())
                    | f"Finish{name}" >> beam.FlatMapTuple(finish, second=second).with_outputs(
                        STATS, ERRORS, FAILED, main="oversampled"))
            return cut.crops, done

        first = pairs | "PlanWindows" >> beam.FlatMap(
            lambda pair: tiles.plan_windows(pair, config, pair.split in random_splits))
        crops, done = round_(first, "Windows")
        if not oversample:
            return {"crops": [crops], STATS: done[STATS], ERRORS: done[ERRORS], FAILED: done[FAILED]}
        more, again = round_(done.oversampled, "Oversampled", second=True)
        merged = {tag: (done[tag], again[tag]) | f"All{tag.title()}" >> beam.Flatten()
                  for tag in (STATS, ERRORS, FAILED)}
        return {"crops": [crops, more], **merged}
