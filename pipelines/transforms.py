"""The prepare pipeline's stages, one named PTransform each. DoFns are thin wrappers around `segprep`.

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

import dataclasses
import os
import pickle
import traceback
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from segprep import codec, layout, pairs as pairs_, progress, storage, tiles
from segprep.convert import ConvertConfig, InputError, check_sizes, decode_pair, encode_crops
from segprep.crops import stable_hash
from segprep.formats.metadata import ErrorRecord, Stats
from segprep.formats.shards import TARGET_SHARD_BYTES, ShardResult, auto_shard_count, write_shard

ERRORS = "errors"
STATS = "stats"
TILED = "tiled"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class PairBytes:
    split: str
    image_id: str
    image: bytes
    mask: bytes
    files: tuple[str, ...] = ()  # (image path, mask path), for error records


@dataclasses.dataclass(frozen=True)
class DecodedPair:
    """An image (BGR: OpenCV's order, from decoder to encoder) and its class map, decoded and checked, with the
    source statistics."""

    split: str
    image_id: str
    image: np.ndarray
    classes: np.ndarray
    stats: Stats


class _LargeElementCoder(beam.coders.Coder):
    """Pickles, for the rare case such an element crosses a stage boundary (they fuse with the stage that makes
    them), and estimates size from the arrays' and bytes' lengths. Beam samples element sizes for its counters by
    encoding them with the PCollection's coder: with the default coder that pickles a decoded 10,000² tile
    (400 MB) just to measure it, which costs time and memory."""

    def encode(self, value):
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def is_deterministic(self):
        return False

    def estimate_size(self, value):
        if isinstance(value, PairBytes):
            return len(value.image) + len(value.mask) + 64
        return value.image.nbytes + value.classes.nbytes + 2200


beam.coders.registry.register_coder(PairBytes, _LargeElementCoder)
beam.coders.registry.register_coder(DecodedPair, _LargeElementCoder)


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


class ReadSplitLists(beam.PTransform):
    """Reads the ids of each split list inside the pipeline (the job graph carries only the lists' paths), the
    first `limit` of each when given, and makes their pairs with the layout's patterns."""

    def __init__(self, images: pairs_.Pattern, masks: pairs_.Pattern, limit: int | None = None,
                 shared: dict[str, dict[str, str]] | None = None):
        super().__init__()
        self._images, self._masks, self._limit, self._shared = images, masks, limit, shared or {}

    def expand(self, lists):
        """(split, list path) → Pair (an error Pair for an id an earlier split lists too: `shared`)."""
        images, masks, limit, shared = self._images, self._masks, self._limit, self._shared

        def read(element):
            split, path = element
            return pairs_.pairs_from_ids(split, pairs_.read_list(path, limit), images, masks, shared.get(split))

        return lists | beam.FlatMap(read)


class ReadManifest(beam.PTransform):
    """Reads the pairs the driver listed (one JSON line each, in a file under the run's temp dir), so that the
    job graph never carries them."""

    def expand(self, paths):
        """manifest path → Pair."""

        def read(path):
            with storage.open_read(path) as f:
                for line in f:
                    if line.strip():
                        yield pairs_.Pair.from_json(line.decode("utf-8"))

        return paths | beam.FlatMap(read)


class _ReadPairFn(beam.DoFn):
    def __init__(self, root: str, progress_: Counters, config: ConvertConfig):
        self._root = root
        self._progress = progress_
        self._config = config

    def process(self, pair: pairs_.Pair):
        split, image_id = pair.split, pair.image_id
        paths = tuple(layout.join(self._root, p) if p else "" for p in (pair.image, pair.mask))
        escapes = [f"{what}: {why}" for what, path in zip(("image", "mask"), paths)
                   if path and (why := pairs_.outside_root(self._root, path))]
        if escapes and not pair.reason:
            pair = dataclasses.replace(pair, reason="outside_root", error=escapes[0])
        if pair.reason:  # known before reading: no partner, a bad id, a link out of the root
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(split, image_id, pair.reason, pair.error,
                                                               tuple(p for p in paths if p)))
            return
        sources = []
        try:
            for what, path in zip(("image", "mask"), paths):
                try:
                    sources.append(tiles.open_source(path, self._config))
                except codec.DecodeError as e:  # a TIFF's header: broken, or declaring more data than it holds
                    raise InputError(f"bad_{what}", f"{what}: {e}") from None
                except Exception as e:  # noqa: BLE001 - any failure to read is this input's error, not the run's
                    missing = storage.absent(path)
                    raise (InputError(f"missing_{what}", f"no {what} file at {path}") if missing
                           else _unreadable(what, path, e)) from None
            result = self._pair(split, image_id, paths, *sources)
        except InputError as e:
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(split, image_id, e.reason, str(e), paths))
            return
        finally:
            for source in sources:
                if isinstance(source, tiles.TiffRegions):
                    source.close()
        self._progress.count("images_read")
        if isinstance(result, tiles.TiledPair):
            yield beam.pvalue.TaggedOutput(TILED, result)
        else:
            yield result

    def _pair(self, split, image_id, paths, image, mask):
        """→ a TiledPair when both files are TIFFs to read by window, else PairBytes; raises `InputError`."""
        regions = [s for s in (image, mask) if isinstance(s, tiles.TiffRegions)]
        if not regions:
            return PairBytes(split, image_id, image, mask, files=paths)
        if len(regions) == 2:
            check_sizes((image.width, image.height), (mask.width, mask.height))
            return tiles.TiledPair(split, image_id, paths, image.height, image.width)
        # One is a TIFF to read by window, its partner is not: both are decoded whole, within --max_pixels.
        big = regions[0]
        what, other = ("image", "mask") if big is image else ("mask", "image")
        if big.height * big.width > self._config.max_pixels:
            raise InputError("too_large", f"{what}: {big.width}×{big.height} (w×h) = {big.width * big.height:,} px, "
                                          f"above --max_pixels {self._config.max_pixels:,}; it is a tiled TIFF, "
                                          f"but its {other} is not: convert the {other} to a tiled TIFF too, and "
                                          "both are read window by window")
        data = [s if isinstance(s, bytes) else _whole(s, w, p) for s, w, p in zip((image, mask), ("image", "mask"),
                                                                                  paths)]
        return PairBytes(split, image_id, *data, files=paths)


def _whole(regions: tiles.TiffRegions, what: str, path: str) -> bytes:
    """The rest of a file opened for region reads, read whole after all; raises `InputError`."""
    try:
        f = regions.file
        f.seek(0)
        return f.read()
    except Exception as e:  # noqa: BLE001 - as any failure to read: this input's error
        raise _unreadable(what, path, e) from None


def _unreadable(what: str, path: str, error: Exception) -> InputError:
    return InputError(f"unreadable_{what}", f"cannot read {what} {path}: {type(error).__name__}: {error}")


class ReadPairs(beam.PTransform):
    """Reads each listed pair's image and mask bytes (local or gs://); a pair of TIFFs larger than a window is
    not read, only its headers: it goes on as a TiledPair."""

    def __init__(self, root: str, progress_: Counters | None = None, config: ConvertConfig | None = None):
        super().__init__()
        self._root = root
        self._progress = progress_ or Counters()
        self._config = config or ConvertConfig()

    def expand(self, ids):
        """Pair → PairBytes; TiledPair on "tiled"; ErrorRecord on "errors" (missing, unreadable or unpaired files,
        bad ids)."""
        out = ids | beam.ParDo(_ReadPairFn(self._root, self._progress, self._config)).with_outputs(
            ERRORS, TILED, main="pairs")
        out.pairs.element_type = PairBytes  # its coder estimates sizes cheaply (see _LargeElementCoder)
        return out


class _DecodeFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, progress_: Counters):
        self._config = config
        self._progress = progress_

    def process(self, pair: PairBytes):
        files = pair.files
        try:
            image, classes, stats = decode_pair(pair.image, pair.mask, self._config, bgr=True)
        except InputError as e:
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(pair.split, pair.image_id, e.reason, str(e), files))
            return
        except Exception as e:  # noqa: BLE001 - a bug or resource failure on one input must not lose the others
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(
                pair.split, pair.image_id, "internal", f"{type(e).__name__}: {e}\n{traceback.format_exc()}", files))
            return
        yield DecodedPair(pair.split, pair.image_id, image, classes, stats)


class DecodePairs(beam.PTransform):
    """Decodes image (RGB) and mask, checks they match, converts the mask to class indices."""

    def __init__(self, config: ConvertConfig, progress_: Counters | None = None):
        super().__init__()
        self._config = config
        self._progress = progress_ or Counters()

    def expand(self, pairs):
        """PairBytes → DecodedPair (RGB image, class map, source Stats); ErrorRecord on "errors"."""
        out = pairs | beam.ParDo(_DecodeFn(self._config, self._progress)).with_outputs(
            ERRORS, main="decoded")
        out.decoded.element_type = DecodedPair  # its coder estimates sizes cheaply (see _LargeElementCoder)
        return out


class _CutFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, random_splits: frozenset[str], progress_: Counters):
        self._config = config
        self._random_splits = random_splits
        self._progress = progress_

    def process(self, element):
        split, image_id, image, classes, source = (element.split, element.image_id, element.image,
                                                   element.classes, element.stats)
        total = Stats().add(source)
        for k, record, stats in encode_crops(image_id, image, classes, self._config, split in self._random_splits,
                                             bgr=True):
            total.add(stats)
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
            image, mask = self._regions(window.files)
            out, summary = tiles.cut_window(window, image, mask, self._config, training)
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

        oversample = config.oversample_fraction > 0 and bool(random_splits)

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


class SpreadCrops(beam.PTransform):
    """Gives each crop a shard and a place in it from a hash of (seed, split, id, k), then groups by shard.

    Crops of one image land in random shards at random positions, never side by side, and the result is the
    same whatever the runner, worker count or bundle order. With `num_shards` 0, each split gets
    ceil(bytes / 128 MiB) shards."""

    def __init__(self, seed: int, num_shards: int, target_shard_bytes: int = TARGET_SHARD_BYTES):
        super().__init__()
        self._seed = seed
        self._num_shards = num_shards
        self._target = target_shard_bytes

    def expand(self, crops):
        """(split, (image_id, k, bytes)) → ((split, shard, num_shards), iterable of (order key, image key, bytes)).
        Only shards that get crops appear; `Finalize` writes the empty ones."""
        seed, fixed, target = self._seed, self._num_shards, self._target

        def assign(element, totals=None):
            split, (image_id, k, data) = element
            n = fixed or auto_shard_count(totals[split], target)
            shard_hash, order = crop_hashes(seed, split, image_id, k)
            return (split, shard_of(shard_hash, n), n), ((order, shard_hash), tiles.image_key(split, image_id), data)

        if fixed:  # no side input: assigning fuses into the stage that cuts the crops
            keyed = crops | "Assign" >> beam.Map(assign)
        else:
            sizes = (crops
                     | "Sizes" >> beam.MapTuple(lambda split, c: (split, len(c[2])))
                     | "TotalBytes" >> beam.CombinePerKey(sum))
            keyed = crops | "Assign" >> beam.Map(assign, totals=beam.pvalue.AsDict(sizes))
        return keyed | "GroupByShard" >> beam.GroupByKey()


def crop_hashes(seed: int, split: str, image_id: str, k: int) -> tuple[int, int]:
    """(shard hash, order hash) of crop `k` of `image_id`: 64-bit, the same on every machine."""
    return stable_hash(seed, "shard", split, image_id, k), stable_hash(seed, "order", split, image_id, k)


def shard_of(shard_hash: int, num_shards: int) -> int:
    """The shard of a crop: shard i of n holds the hashes in [i/n, (i+1)/n) of the 64-bit range: a contiguous
    slice, so the spill path (pipelines/spill.py) finds all of a shard in a few buckets."""
    return (shard_hash * num_shards) >> 64


class _WriteShardFn(beam.DoFn):
    def __init__(self, temp_dir: str, compressed: bool):
        self._temp_dir = temp_dir
        self._compressed = compressed

    def process(self, element, failed=()):
        (split, shard, num_shards), records = element
        failed = set(failed)
        ordered = (data for _, key, data in sorted(records, key=lambda r: r[0])  # (order, shard hash): as spill
                   if key not in failed)
        yield counted(write_shard(self._temp_dir, self._compressed, split, shard, num_shards, ordered))


def counted(result: ShardResult) -> ShardResult:
    """A shard just written, counted in the Beam metrics (both shuffle paths' writers call it)."""
    Metrics.counter("segprep", "crops_written").inc(result.records)
    Metrics.counter("segprep", "bytes_written").inc(result.bytes)
    return result


class WriteShards(beam.PTransform):
    """Writes each shard, its records in hash order, as a TFRecord file under the run's temp dir; crops of the
    images in `failed` (a PCollection of `tiles.image_key`s: tiles that failed in some window) are left out."""

    def __init__(self, temp_dir: str, compressed: bool, failed=None):
        super().__init__()
        self._temp_dir = temp_dir
        self._compressed = compressed
        self._failed = failed

    def expand(self, shards):
        """((split, shard, n), [(order, image key, bytes)]) → ShardResult."""
        side = {"failed": beam.pvalue.AsList(self._failed)} if self._failed is not None else {}
        return shards | beam.ParDo(_WriteShardFn(self._temp_dir, self._compressed), **side)


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

