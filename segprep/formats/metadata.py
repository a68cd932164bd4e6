"""metadata.json: what a prepare run wrote, and the trainer's source of truth. This module owns its keys: the
pipeline builds it with `build`, every reader goes through `parse` and the accessors below.

Written last by the pipeline (its presence means the run finished); read by the trainer for shard names, record
counts (so steps_per_epoch is never guessed), classes, colours and the RGB mean/std of the training crops.

    {"schema_version": 1, "class_names": [...], "class_colors": [[r, g, b], ...], "ignore_colors": [...],
     "num_classes": 21, "ignore_label": 255, "crop_size": 256, "image_format": "jpeg", "file_format": "tfrecord",
     "compression": "none", "seed": 0, "random_crop_splits": ["train"], "rgb_mean": [...], "rgb_std": [...],
     "splits": {"train": {"records": ..., "shards": [names], "shard_records": [...], "bytes": ..., ...}},
     "flags": {every flag of the run}, "seconds": ...}

Over 400 lines on purpose: metadata.json is written (`build`, with the `Stats` it reports) and read back (`parse`,
the checked `Metadata` view) in this one module, so that no key is spelled anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from segprep import fields, layout
from segprep.formats.shards import FILE_FORMATS, ShardFormat, is_shard
from segprep.palette import IGNORE_LABEL, Palette
from segprep.formats.tfds_info import FILES as TFDS_FILES

SCHEMA_VERSION = 1
METADATA = "metadata.json"  # OUT/metadata.json: written last, its presence means the run finished
ERRORS_DIR = "errors"  # OUT/errors/SPLIT.jsonl: one ErrorRecord a line


def metadata_path(out: str) -> str:
    return layout.join(out, METADATA)


def errors_path(out: str, split: str) -> str:
    return layout.join(out, ERRORS_DIR, f"{split}.jsonl")


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """An input that could not be used: a line of errors/SPLIT.jsonl."""

    split: str
    image_id: str
    reason: str
    error: str
    files: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"id": self.image_id, "split": self.split, "reason": self.reason, "error": self.error,
                           "files": list(self.files)}, ensure_ascii=False)


@dataclasses.dataclass
class Stats:
    """Counts that add up across images: what metadata.json reports per split. Pixel counts are exact integers;
    the RGB sums are float64 (exact to ~1e-16 relative, far below the 4 decimals metadata.json keeps)."""

    images: int = 0
    crops: int = 0
    class_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))
    class_crops: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))  # crops holding each
    rgb_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, np.float64))
    rgb_sq_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, np.float64))
    rgb_pixels: int = 0  # source pixels inside crops (padding excluded)
    unknown_pixels_ignored: int = 0  # off-palette mask pixels made 255 (--unknown_colors=ignore)
    unknown_pixels_snapped: int = 0  # off-palette mask pixels snapped to a present colour (nearest)
    source_pixels: int = 0
    source_ignore_pixels: int = 0  # source mask pixels that are the ignore label
    binary_masks: int = 0  # index masks holding only 0 and 255 (255 = ignore) with no index map: likely 0/255 labels
    exif_applied: int = 0  # images with an EXIF orientation, read as displayed (their masks fit that way)
    exif_as_stored: int = 0  # images with an EXIF orientation, read as stored
    nodata_pixels: int = 0  # source pixels whose image holds no data (their mask made 255)
    nodata_redraws: int = 0  # random crops drawn again for holding more than --max_nodata no-data pixels
    nodata_tiles_skipped: int = 0  # tiles of tiled splits that hold no data at all, not written
    block_crops_dropped: int = 0  # --split_by blocks: training crops with no draw clear of the val blocks
    val_blocks: int = 0  # --split_by blocks: val blocks, and the blocks holding data they were chosen among
    data_blocks: int = 0
    extras: dict = dataclasses.field(default_factory=dict)  # extra input name → BandStats of its crops
    grids: dict = dataclasses.field(default_factory=dict)  # source id → its georeferencing (`grid_entry`)

    def add(self, other: Stats) -> Stats:
        self.images += other.images
        self.crops += other.crops
        self.class_pixels += other.class_pixels
        self.class_crops += other.class_crops
        self.rgb_sum += other.rgb_sum
        self.rgb_sq_sum += other.rgb_sq_sum
        self.rgb_pixels += other.rgb_pixels
        self.unknown_pixels_ignored += other.unknown_pixels_ignored
        self.unknown_pixels_snapped += other.unknown_pixels_snapped
        self.source_pixels += other.source_pixels
        self.source_ignore_pixels += other.source_ignore_pixels
        self.binary_masks += other.binary_masks
        self.exif_applied += other.exif_applied
        self.exif_as_stored += other.exif_as_stored
        self.nodata_pixels += other.nodata_pixels
        self.nodata_redraws += other.nodata_redraws
        self.nodata_tiles_skipped += other.nodata_tiles_skipped
        self.block_crops_dropped += other.block_crops_dropped
        self.val_blocks += other.val_blocks
        self.data_blocks += other.data_blocks
        if other.grids:
            self.grids = {**self.grids, **other.grids}
        for name, bands in other.extras.items():
            if name in self.extras:
                self.extras[name].add(bands)
            else:
                self.extras[name] = dataclasses.replace(bands, pixels=bands.pixels.copy(), sums=bands.sums.copy(),
                                                        squares=bands.squares.copy(), low=bands.low.copy(),
                                                        high=bands.high.copy(), nodata=set(bands.nodata))
        return self

    def rgb_mean_std(self) -> tuple[list[float], list[float]]:
        if not self.rgb_pixels:
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        mean = self.rgb_sum / self.rgb_pixels
        var = np.maximum(self.rgb_sq_sum / self.rgb_pixels - mean ** 2, 0.0)
        return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in np.sqrt(var)]


@dataclasses.dataclass
class BandStats:
    """Per-band sums over an extra input's crop pixels (padding and nodata pixels excluded), as the RGB statistics
    are kept, and the nodata values its rasters declared."""

    dtype: str
    pixels: np.ndarray  # (C,) int64: the values counted in each band
    sums: np.ndarray  # (C,) float64
    squares: np.ndarray
    low: np.ndarray  # (C,) float64: the smallest value of each band
    high: np.ndarray
    nodata: set = dataclasses.field(default_factory=set)  # the nodata values declared ("nan" for NaN)

    @classmethod
    def of(cls, values: np.ndarray, nodata: float | None = None) -> BandStats:
        """Of an (h, w, C) array of crop pixels, leaving out those equal to `nodata` (the raster's declared
        nodata value, NaN included)."""
        from segprep.extras import no_data

        channels = values.shape[-1]
        flat = values.reshape(-1, channels).astype(np.float64)
        declared = set() if nodata is None else {"nan" if np.isnan(nodata) else float(nodata)}
        empty = no_data(values, nodata)
        if empty is not None and empty.any():
            keep = ~empty.reshape(-1, channels)
            counts = keep.sum(0).astype(np.int64)
            held = np.where(keep, flat, 0.0)
            return cls(str(values.dtype), counts, held.sum(0), (held * held).sum(0),
                       np.where(keep, flat, np.inf).min(0, initial=np.inf),
                       np.where(keep, flat, -np.inf).max(0, initial=-np.inf), declared)
        if not flat.size:
            return cls(str(values.dtype), np.zeros(channels, np.int64), np.zeros(channels), np.zeros(channels),
                       np.full(channels, np.inf), np.full(channels, -np.inf), declared)
        return cls(str(values.dtype), np.full(channels, flat.shape[0], np.int64), flat.sum(0), (flat * flat).sum(0),
                   flat.min(0), flat.max(0), declared)

    def add(self, other: BandStats) -> BandStats:
        self.nodata |= other.nodata
        self.pixels += other.pixels
        self.sums += other.sums
        self.squares += other.squares
        np.minimum(self.low, other.low, out=self.low)
        np.maximum(self.high, other.high, out=self.high)
        return self

    def summary(self) -> dict:
        """{mean, std, min, max} per band, for metadata.json."""
        n = np.maximum(self.pixels, 1)
        mean = self.sums / n
        std = np.sqrt(np.maximum(self.squares / n - mean ** 2, 0.0))
        def rounded(values):
            return [round(float(v), 6) if np.isfinite(v) else None for v in values]
        return {"mean": rounded(mean), "std": rounded(std), "min": rounded(self.low), "max": rounded(self.high),
                **({"nodata": sorted(self.nodata, key=str)} if self.nodata else {})}


class MetadataError(ValueError):
    """metadata.json is missing, unreadable or not one this version understands."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file of a split as it was finally written."""

    name: str
    records: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """Everything metadata.json says about one split."""

    shards: list[Shard]
    stats: Stats
    random_crops: bool
    images_listed: int
    inputs_failed: int
    repeated_ids: int = 0  # ids the split's list repeats (each used once)


def build(*, palette: Palette, crop_size: int, image_format: str, shard_format: ShardFormat, seed: int,
          splits: dict[str, SplitResult], flags: dict, seconds: float, extra_inputs: tuple = ()) -> dict:
    """The metadata of a finished run. The RGB mean/std, and each extra input's per-band statistics, are over the
    random-crop (training) splits' crops, or over every split's when the run has no training split."""
    training = Stats()
    for result in splits.values():
        if result.random_crops:
            training.add(result.stats)
    if not training.rgb_pixels:
        for result in splits.values():
            training.add(result.stats)
    mean, std = training.rgb_mean_std()
    return {
        "schema_version": SCHEMA_VERSION,
        "class_names": list(palette.names),
        "class_colors": [list(c) for c in palette.colors],
        "ignore_colors": [list(c) for c in palette.ignore_colors],
        "num_classes": palette.num_classes,
        "ignore_label": IGNORE_LABEL,
        "crop_size": crop_size,
        "image_format": image_format,
        "file_format": shard_format.file_format,
        "compression": "gzip" if shard_format.compressed else "none",
        "seed": seed,
        "random_crop_splits": [name for name, r in splits.items() if r.random_crops],
        # Mean/std over the training crops' source pixels (0..255), for input normalisation.
        "rgb_mean": mean,
        "rgb_std": std,
        "splits": {name: _split_entry(name, r, palette.num_classes) for name, r in splits.items()},
        # Per extra input: where it came from, its bands and type, and per-band statistics of the training crops.
        **({"extra_inputs": {e.name: _extra_entry(e, training.extras.get(e.name), _nodata(splits, e.name))
                             for e in extra_inputs}} if extra_inputs else {}),
        "flags": flags,
        "seconds": round(seconds, 2),
        # TensorFlow Datasets' files beside the shards (segprep/formats/tfds_info.py): none for gzip shards
        "tfds_files": [] if shard_format.compressed else list(TFDS_FILES),
    }


def _nodata(splits: dict[str, SplitResult], name: str) -> list:
    """The nodata values an extra input's rasters declared, in every split ("nan" for NaN)."""
    found: set = set()
    for result in splits.values():
        if name in result.stats.extras:
            found |= result.stats.extras[name].nodata
    return sorted(found, key=str)


def _extra_entry(extra, bands: BandStats | None, nodata: list) -> dict:
    entry = {"source": extra.source, "channels": int(bands.sums.size) if bands else None,
             "dtype": bands.dtype if bands else None}
    entry.update(bands.summary() if bands else {"mean": None, "std": None, "min": None, "max": None})
    entry.pop("nodata", None)
    if nodata:  # the values whose pixels hold no data (left out of the statistics above)
        entry["nodata"] = nodata
    return entry


def grid_entry(grid, height: int, width: int) -> dict:
    """metadata.json's georeferencing of one source: its CRS, its GDAL-order transform (JSON numbers are float64:
    exact) and its size."""
    return {**grid.to_json(), "height": int(height), "width": int(width)}


def _split_entry(name: str, result: SplitResult, num_classes: int) -> dict:
    st = result.stats
    counts = [int(c) for c in st.class_pixels]
    mean, std = st.rgb_mean_std()
    return {
        "records": sum(s.records for s in result.shards),
        "shards": [s.name for s in result.shards],
        "shard_records": [s.records for s in result.shards],
        "bytes": sum(s.bytes for s in result.shards),
        "crop_mode": "random" if result.random_crops else "tiles",
        "images_listed": result.images_listed,
        "repeated_ids": result.repeated_ids,
        "images_used": st.images,
        "inputs_failed": result.inputs_failed,
        "errors_file": errors_path("", name).lstrip("/") if result.inputs_failed else None,
        "class_pixels": counts[:num_classes],
        # crops whose mask holds each class (the records' image/segmentation/class/present)
        "class_crops": [int(c) for c in st.class_crops[:num_classes]],
        "ignore_pixels": counts[IGNORE_LABEL],
        "source_pixels": st.source_pixels,
        # share of the source masks' pixels that are the ignore label, and how many masks held only 0 and 255
        # (binary labels whose 255 would be ignored: see prepare's warning)
        "source_ignore_share": round(st.source_ignore_pixels / st.source_pixels, 6) if st.source_pixels else 0.0,
        "binary_masks": st.binary_masks,
        "unknown_pixels_ignored": st.unknown_pixels_ignored,
        "unknown_pixels_snapped": st.unknown_pixels_snapped,
        # images with an EXIF orientation: read as displayed (their masks fit that way), or as stored (--exif)
        "exif_applied": st.exif_applied,
        "exif_as_stored": st.exif_as_stored,
        # images' no-data pixels (mask 255), random crops drawn again for --max_nodata, all-empty tiles skipped
        "nodata_pixels": st.nodata_pixels,
        "nodata_redraws": st.nodata_redraws,
        "nodata_tiles_skipped": st.nodata_tiles_skipped,
        # --split_by blocks (in the val split's entry): its blocks, of the blocks holding data; training crops
        # given up for finding no draw clear of the val blocks (in the training split's)
        **({"val_blocks": st.val_blocks, "data_blocks": st.data_blocks} if st.data_blocks else {}),
        **({"block_crops_dropped": st.block_crops_dropped} if st.block_crops_dropped else {}),
        "rgb_mean": mean,
        "rgb_std": std,
        # georeferenced sources: id → {crs, transform (GDAL order, float64), height, width}, sorted by id
        **({"georeferencing": dict(sorted(st.grids.items()))} if st.grids else {}),
    }


def dumps(meta: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (colours, counts)."""
    text = json.dumps(meta, indent=2)
    return re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


_REMEDY = "it was edited, or not written by this segprep; re-run `python -m pipelines.prepare --overwrite`."

_TOP = {
    "class_names": fields.Field("a list of class names", lambda v: fields.list_of(fields.text)(v) and bool(v)),
    "class_colors": fields.Field("a list of [r, g, b] colours, one per class", fields.list_of(fields.color)),
    "ignore_colors": fields.Field("a list of [r, g, b] colours", fields.list_of(fields.color), required=False),
    "num_classes": fields.Field("the number of class names", fields.integer(1)),
    "ignore_label": fields.Field("an integer", fields.integer(0), required=False),
    "crop_size": fields.Field("a positive integer", fields.integer(1)),
    "image_format": fields.Field("'jpeg' or 'png'", lambda v: v in ("jpeg", "png"), required=False),
    "file_format": fields.Field(" or ".join(map(repr, FILE_FORMATS)), lambda v: v in FILE_FORMATS, required=False),
    "compression": fields.Field("'gzip' or 'none'", lambda v: v in ("gzip", "none"), required=False),
    "seed": fields.Field("an integer", fields.integer(0), required=False),
    "random_crop_splits": fields.Field("a list of split names", fields.list_of(fields.text), required=False),
    "rgb_mean": fields.Field("three numbers", fields.list_of(fields.number, 3)),
    "rgb_std": fields.Field("three numbers", fields.list_of(fields.number, 3)),
    "splits": fields.Field("an object {split: {...}}", lambda v: isinstance(v, dict)),
    "flags": fields.Field("an object", lambda v: isinstance(v, dict), required=False),
    "extra_inputs": fields.Field("an object {name: {...}}", lambda v: isinstance(v, dict), required=False),
}
_EXTRA = {
    "source": fields.Field("a pattern or @bands", fields.text),
    "channels": fields.Field("a positive integer", fields.optional(fields.integer(1))),
    "dtype": fields.Field("uint8, uint16 or float32", lambda v: v in (None, "uint8", "uint16", "float32")),
    "mean": fields.Field("a list of numbers", fields.optional(fields.list_of(fields.optional(fields.number)))),
    "std": fields.Field("a list of numbers", fields.optional(fields.list_of(fields.optional(fields.number)))),
    "nodata": fields.Field('a list of numbers or "nan"', fields.list_of(lambda v: v == "nan" or fields.number(v)),
                           required=False),
}
_SPLIT = {
    "records": fields.Field("an integer ≥ 0", fields.integer(0)),
    "shards": fields.Field("a list of shard file names",
                           fields.list_of(lambda n: isinstance(n, str) and "/" not in n and is_shard(n))),
    "shard_records": fields.Field("a list of integers ≥ 0, one per shard", fields.list_of(fields.integer(0))),
    "class_pixels": fields.Field("a list of integers ≥ 0", fields.list_of(fields.integer(0)), required=False),
    "class_crops": fields.Field("a list of integers ≥ 0", fields.list_of(fields.integer(0)), required=False),
    "images_listed": fields.Field("an integer ≥ 0", fields.integer(0), required=False),
    "images_used": fields.Field("an integer ≥ 0", fields.integer(0), required=False),
    "inputs_failed": fields.Field("an integer ≥ 0", fields.integer(0), required=False),
    "source_pixels": fields.Field("an integer ≥ 0", fields.integer(0), required=False),
    "errors_file": fields.Field("a path or null", fields.optional(fields.text), required=False),
}


def parse(text: str | bytes, where: str = "metadata.json") -> Metadata:
    """metadata.json's text → the `Metadata` view, every key a reader uses checked first (`MetadataError` naming
    the key)."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetadataError(f"{where} is not valid JSON ({e}); re-run `python -m pipelines.prepare`.") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise MetadataError(f"{where} has schema_version {version!r}; this segprep reads version {SCHEMA_VERSION}. "
                            "Re-run `python -m pipelines.prepare --overwrite` with this version.")
    check(meta, where)
    return Metadata.from_json(meta, where)


def check(meta: dict, where: str = "metadata.json") -> None:
    """Every key a reader uses, with its type and what ties keys together (a colour per class, a count per shard);
    `MetadataError` naming the first that is wrong."""
    try:
        fields.check(meta, _TOP, where, _REMEDY)
        for name, entry in meta["splits"].items():
            fields.check(entry, _SPLIT, f"{where}, split {name!r}", _REMEDY)
        for name, entry in meta.get("extra_inputs", {}).items():
            fields.check(entry, _EXTRA, f"{where}, extra input {name!r}", _REMEDY)
    except fields.FieldError as e:
        raise MetadataError(str(e)) from None
    problems = []
    if len(meta["class_colors"]) != len(meta["class_names"]):
        problems.append(f"{len(meta['class_names'])} class names but {len(meta['class_colors'])} colours")
    if meta["num_classes"] != len(meta["class_names"]):
        problems.append(f"num_classes {meta['num_classes']} but {len(meta['class_names'])} class names")
    for name, entry in meta["splits"].items():
        if len(entry["shard_records"]) != len(entry["shards"]):
            problems.append(f"split {name!r} lists {len(entry['shards'])} shards but {len(entry['shard_records'])} "
                            "record counts")
    if problems:
        raise MetadataError(f"{where}: {problems[0]}: {_REMEDY}")


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What metadata.json says of one split (see `_split_entry` for what each count is)."""

    name: str
    records: int
    shards: tuple[str, ...]
    shard_records: tuple[int, ...]
    random_crops: bool
    images_listed: int
    images_used: int
    inputs_failed: int
    errors_file: str | None
    class_pixels: tuple[int, ...] | None  # None in runs older than the key
    class_crops: tuple[int, ...] | None
    ignore_pixels: int
    source_pixels: int
    source_ignore_share: float
    binary_masks: int
    unknown_pixels_ignored: int
    unknown_pixels_snapped: int
    exif_applied: int
    exif_as_stored: int
    repeated_ids: int
    georeferenced: int = 0  # sources with a grid (splits.SPLIT.georeferencing)

    @property
    def crop_mode(self) -> str:
        return "random" if self.random_crops else "tiles"

    @classmethod
    def from_json(cls, name: str, entry: dict, random_crops: bool) -> SplitInfo:
        counts = {key: int(entry.get(key) or 0) for key in (
            "images_listed", "images_used", "inputs_failed", "ignore_pixels", "source_pixels", "binary_masks",
            "unknown_pixels_ignored", "unknown_pixels_snapped", "exif_applied", "exif_as_stored", "repeated_ids")}
        pixels, crops = entry.get("class_pixels"), entry.get("class_crops")
        return cls(name=name, records=entry["records"], shards=tuple(entry["shards"]),
                   shard_records=tuple(entry["shard_records"]), random_crops=random_crops,
                   errors_file=entry.get("errors_file"),
                   class_pixels=tuple(pixels) if pixels is not None else None,
                   class_crops=tuple(crops) if crops is not None else None,
                   source_ignore_share=float(entry.get("source_ignore_share") or 0.0),
                   georeferenced=len(entry.get("georeferencing") or {}), **counts)


@dataclasses.dataclass(frozen=True)
class ExtraInfo:
    """What metadata.json says of one extra input: where it came from, its bands and type (None when no crop held
    it), and per-band statistics of the training crops."""

    name: str
    source: str
    channels: int | None
    dtype: str | None
    mean: tuple | None
    std: tuple | None
    low: tuple | None
    high: tuple | None
    nodata: tuple = ()  # the nodata values its rasters declared, NaN as float("nan")

    @classmethod
    def from_json(cls, name: str, entry: dict) -> ExtraInfo:
        def values(key):
            return tuple(entry[key]) if entry.get(key) is not None else None
        return cls(name, entry["source"], entry.get("channels"), entry.get("dtype"), values("mean"), values("std"),
                   values("min"), values("max"), tuple(float(v) for v in entry.get("nodata") or ()))


@dataclasses.dataclass(frozen=True)
class Metadata:
    """A parsed, checked metadata.json: the one view every reader takes (`parse`)."""

    where: str  # the file, for messages
    palette: Palette
    crop_size: int
    image_format: str
    compressed: bool
    seed: int
    rgb_mean: tuple[float, float, float]
    rgb_std: tuple[float, float, float]
    splits: dict[str, SplitInfo]
    flags: dict  # every flag of the prepare run
    extra_inputs: dict = dataclasses.field(default_factory=dict)  # name → ExtraInfo
    file_format: str = "tfrecord"  # or "array_record" (prepare --file_format)

    @property
    def num_classes(self) -> int:
        return self.palette.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.palette.names)

    @property
    def compression_type(self) -> str | None:
        """TFRecordDataset's compression_type for the run's shards: "GZIP" or None."""
        return "GZIP" if self.compressed else None

    @property
    def bands(self) -> tuple[int, ...] | None:
        """prepare's --bands (how images became RGB): predict reads new images the same way."""
        return tuple(self.flags["bands"]) if self.flags.get("bands") else None

    @property
    def image_range(self) -> tuple[float, float] | None:
        """prepare's --image_range: predict reads new images the same way."""
        return tuple(self.flags["image_range"]) if self.flags.get("image_range") else None

    @property
    def nan_inputs(self) -> frozenset[str]:
        """The extra inputs whose declared nodata value is NaN: NaN is a value of theirs, not damage."""
        return frozenset(name for name, info in self.extra_inputs.items() if any(v != v for v in info.nodata))

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise MetadataError(f"{self.where} has no split {name!r}; it has: "
                                f"{', '.join(sorted(self.splits)) or 'none'}.")
        return self.splits[name]

    def training_split(self) -> str:
        """The split to train on: "train" when there is one, else the one random-crop split (ADE20K's "training",
        LoveDA's "Train")."""
        if "train" in self.splits:
            return "train"
        random = [name for name, s in self.splits.items() if s.random_crops]
        if len(random) == 1:
            return random[0]
        raise MetadataError(f"{self.where}: which split to train on? It has {', '.join(self.splits) or 'none'}; "
                            "pass --train_split NAME.")

    def validation_split(self) -> str:
        """The split to validate on: "val" or "validation" when there is one, else the one split that is not a
        random-crop split (LoveDA's "Val")."""
        for name in ("val", "validation"):
            if name in self.splits:
                return name
        tiles = [name for name, s in self.splits.items() if not s.random_crops]
        if len(tiles) == 1:
            return tiles[0]
        raise MetadataError(f"{self.where}: which split to validate on? It has {', '.join(self.splits) or 'none'}; "
                            "pass --val_split NAME (prepare --val_fraction holds one out of a tree without splits).")

    def shard_paths(self, data_dir: str, name: str) -> list[str]:
        """The split's shard files, by the names the run recorded (never a glob, which would also match stale
        shards of an earlier run)."""
        return [layout.join(data_dir, shard) for shard in self.split(name).shards]

    @classmethod
    def from_json(cls, meta: dict, where: str) -> Metadata:
        palette = Palette(names=tuple(meta["class_names"]), colors=tuple(tuple(c) for c in meta["class_colors"]),
                          ignore_colors=tuple(tuple(c) for c in meta.get("ignore_colors", ())), draw_only=True)
        random = set(meta.get("random_crop_splits", []))
        return cls(where=where, palette=palette, crop_size=meta["crop_size"],
                   image_format=meta.get("image_format", "jpeg"), compressed=meta.get("compression") == "gzip",
                   file_format=meta.get("file_format", "tfrecord"),
                   seed=int(meta.get("seed", 0)), rgb_mean=tuple(meta["rgb_mean"]), rgb_std=tuple(meta["rgb_std"]),
                   splits={name: SplitInfo.from_json(name, entry, name in random)
                           for name, entry in meta["splits"].items()},
                   flags=dict(meta.get("flags") or {}),
                   extra_inputs={name: ExtraInfo.from_json(name, entry)
                                 for name, entry in (meta.get("extra_inputs") or {}).items()})


def recorded_files(data: bytes) -> list[str] | None:
    """The file names (relative to OUT) that a metadata.json records as its run's: itself, its shards and its errors
    files; None when the file is not a segprep metadata.json. Lenient on purpose: any schema version, so that
    `prepare --overwrite` knows an old run's files as segprep's too."""
    try:
        meta = json.loads(data)
    except ValueError:
        return None
    if not isinstance(meta, dict) or "schema_version" not in meta or not isinstance(meta.get("splits"), dict):
        return None
    names = [METADATA]
    tfds = meta.get("tfds_files")
    names += [n for n in tfds if n in TFDS_FILES] if isinstance(tfds, list) else []
    for split, entry in meta["splits"].items():
        if not isinstance(entry, dict):
            continue
        shards = entry.get("shards") if isinstance(entry.get("shards"), list) else []
        names += [n for n in shards if isinstance(n, str) and "/" not in n and is_shard(n)]
        if entry.get("errors_file") == errors_path("", str(split)).lstrip("/"):
            names.append(entry["errors_file"])
    return names
