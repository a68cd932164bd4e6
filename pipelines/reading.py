"""The prepare pipeline's reading stages: split lists and listings → pairs of file bytes → decoded, checked pairs.

    Pair (split, id, image path, mask path)
      → ReadPairs      → PairBytes                       + ErrorRecord on "errors", + TiledPair on "tiled"
      → DecodePairs    → DecodedPair                     + ErrorRecord on "errors"

DoFns are thin wrappers around `segprep` (convert.decode_pair, tiles.open_source); the stage map of the whole
pipeline is in pipelines/transforms.py.
"""

from __future__ import annotations

import dataclasses
import pickle
import traceback

import apache_beam as beam
import numpy as np

from pipelines.transforms import ERRORS, TILED, Counters
from segprep import codec, geo, layout, pairs as pairs_, storage, tiles
from segprep.convert import ConvertConfig, InputError, check_grids, check_sizes, decode_source
from segprep.formats.metadata import ErrorRecord, Stats


@dataclasses.dataclass(frozen=True)
class PairBytes:
    split: str
    image_id: str
    image: bytes
    mask: bytes
    files: tuple[str, ...] = ()  # (image path, mask path, extra inputs' paths), for error records
    extras: tuple[tuple[str, bytes], ...] = ()  # (name, file bytes) of the extra inputs read by pattern


@dataclasses.dataclass(frozen=True)
class DecodedPair:
    """An image (BGR: OpenCV's order, from decoder to encoder) and its class map, decoded and checked, with the
    source statistics."""

    split: str
    image_id: str
    image: np.ndarray
    classes: np.ndarray
    stats: Stats
    extras: dict = dataclasses.field(default_factory=dict)  # extra input name → (H, W, C) raster
    nodata: dict = dataclasses.field(default_factory=dict)  # extra input name → the nodata value it declares
    grid: object = None  # segprep.geo.Grid of a georeferenced source
    empty: np.ndarray | None = None  # (H, W) bool: the image's no-data pixels, when it declares a nodata value


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
            return len(value.image) + len(value.mask) + sum(len(data) for _, data in value.extras) + 64
        return (value.image.nbytes + value.classes.nbytes + sum(a.nbytes for a in value.extras.values()) + 2200
                + (value.empty.nbytes if value.empty is not None else 0))


beam.coders.registry.register_coder(PairBytes, _LargeElementCoder)


beam.coders.registry.register_coder(DecodedPair, _LargeElementCoder)


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
    def __init__(self, root: str, progress_: Counters, config: ConvertConfig, images: pairs_.Pattern | None):
        self._root = root
        self._progress = progress_
        self._config = config
        self._images = images
        self._by_pattern = tuple(e for e in config.extra_inputs if e.pattern is not None)

    def _extra_paths(self, pair: pairs_.Pair) -> tuple[str, ...]:
        """The root-joined paths of the pair's extra inputs read by pattern (none before the image is known)."""
        if not self._by_pattern or not pair.image:
            return ()
        return tuple(layout.join(self._root, e.path(self._images, pair.image, pair.split)) for e in self._by_pattern)

    def process(self, pair: pairs_.Pair):
        split, image_id = pair.split, pair.image_id
        paths = tuple(layout.join(self._root, p) if p else "" for p in (pair.image, pair.mask))
        paths += self._extra_paths(pair)
        names = ("image", "mask") + tuple(f"extra input {e.name}" for e in self._by_pattern)
        escapes = [f"{what}: {why}" for what, path in zip(names, paths)
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
            for what, path in zip(names, paths):
                reason = what if what in ("image", "mask") else "extra"
                try:
                    sources.append(tiles.open_source(path, self._config))
                except codec.DecodeError as e:  # a TIFF's header: broken, or declaring more data than it holds
                    raise InputError(f"bad_{reason}", f"{what}: {e}") from None
                except Exception as e:  # noqa: BLE001 - any failure to read is this input's error, not the run's
                    missing = storage.absent(path)
                    raise (InputError(f"missing_{reason}", f"no {what} file at {path}") if missing
                           else _unreadable(what, path, e, reason)) from None
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

    def _pair(self, split, image_id, paths, image, mask, *extra):
        """→ a TiledPair when both files (and every extra input's) are TIFFs to read by window, else PairBytes;
        raises `InputError`."""
        regions = [s for s in (image, mask) if isinstance(s, tiles.TiffRegions)]
        if not regions:
            return PairBytes(split, image_id, image, mask, files=paths,
                             extras=tuple(zip((e.name for e in self._by_pattern), [self._bytes(x, p) for x, p in
                                                                                   zip(extra, paths[2:])])))
        if len(regions) == 2:
            check_sizes((image.width, image.height), (mask.width, mask.height))
            grid = check_grids(geo.read_file(image.file), geo.read_file(mask.file),
                               {e.name: geo.read_file(s.file) for e, s in zip(self._by_pattern, extra)
                                if isinstance(s, tiles.TiffRegions)})
            for e, source in zip(self._by_pattern, extra):
                if not isinstance(source, tiles.TiffRegions):
                    raise InputError("bad_extra", f"extra input {e.name}: the tile is read window by window "
                                                  f"({image.width}×{image.height}), so its extra inputs must be "
                                                  "tiled or stripped TIFFs too; convert it (gdal_translate -co "
                                                  "TILED=YES)")
                if (source.width, source.height) != (image.width, image.height):
                    raise InputError("size_mismatch", f"extra input {e.name} is {source.width}×{source.height} "
                                                      f"(w×h) but its image is {image.width}×{image.height}; they "
                                                      "must be the same size")
            nodata = self._config.nodata if self._config.nodata is not None else image.nodata
            return tiles.TiledPair(split, image_id, paths, image.height, image.width, grid, nodata)
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
        return PairBytes(split, image_id, *data, files=paths,
                         extras=tuple(zip((e.name for e in self._by_pattern),
                                          [self._bytes(x, p) for x, p in zip(extra, paths[2:])])))

    @staticmethod
    def _bytes(source, path: str) -> bytes:
        return source if isinstance(source, bytes) else _whole(source, "extra input", path, "extra")


def _whole(regions: tiles.TiffRegions, what: str, path: str, reason: str | None = None) -> bytes:
    """The rest of a file opened for region reads, read whole after all; raises `InputError`."""
    try:
        f = regions.file
        f.seek(0)
        return f.read()
    except Exception as e:  # noqa: BLE001 - as any failure to read: this input's error
        raise _unreadable(what, path, e, reason) from None


def _unreadable(what: str, path: str, error: Exception, reason: str | None = None) -> InputError:
    return InputError(f"unreadable_{reason or what}", f"cannot read {what} {path}: {type(error).__name__}: {error}")


class ReadPairs(beam.PTransform):
    """Reads each listed pair's image and mask bytes (local or gs://); a pair of TIFFs larger than a window is
    not read, only its headers: it goes on as a TiledPair."""

    def __init__(self, root: str, progress_: Counters | None = None, config: ConvertConfig | None = None,
                 images: pairs_.Pattern | None = None):
        super().__init__()
        self._root = root
        self._progress = progress_ or Counters()
        self._config = config or ConvertConfig()
        self._images = images  # what the extra inputs' patterns take their fields from

    def expand(self, ids):
        """Pair → PairBytes; TiledPair on "tiled"; ErrorRecord on "errors" (missing, unreadable or unpaired files,
        bad ids)."""
        out = ids | beam.ParDo(_ReadPairFn(self._root, self._progress, self._config, self._images)).with_outputs(
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
            source = decode_source(pair.image, pair.mask, self._config, bgr=True, extra_bytes=dict(pair.extras))
        except InputError as e:
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(pair.split, pair.image_id, e.reason, str(e), files))
            return
        except Exception as e:  # noqa: BLE001 - a bug or resource failure on one input must not lose the others
            self._progress.count("images_failed")
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord(
                pair.split, pair.image_id, "internal", f"{type(e).__name__}: {e}\n{traceback.format_exc()}", files))
            return
        yield DecodedPair(pair.split, pair.image_id, source.image, source.classes, source.stats, source.extras,
                          source.nodata, source.grid, source.empty)


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
