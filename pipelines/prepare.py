"""Segmentation datasets (images + masks, any layout) → shuffled, sharded TFRecords of 256×256 crops, on Apache Beam.

    python -m pipelines.prepare --runner=DirectRunner                       # bundled sample → data/records
    python -m pipelines.prepare --input_dir VOC_ROOT --output_dir OUT --runner=DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing
    python -m pipelines.prepare --input_dir gs://B/VOC2012 --output_dir gs://B/records \
        --runner=DataflowRunner --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py

Any layout is read by pattern (--images, --masks; see segprep/patterns.py and docs/datasets.md).

Exit status: 0 when every listed input was written, 1 when some inputs failed (everything else is still written;
see OUT/errors/SPLIT.jsonl), 2 for a usage mistake (one line on stderr, nothing written).

Over 400 lines: a quarter of it is the flag table (`build_parser`, one entry a flag with its help); the steps of a
run are named functions, the stages in pipelines/reading.py, cutting.py and shards.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid

from pipelines import beam_flags, output, report
from segprep import convert, extras, layout, layouts, lookup, pairs, runlock, sample, storage
from segprep.formats.shards import FILE_FORMATS, TEMP_PREFIX, ShardFormat
from segprep.formats.metadata import metadata_path
from segprep import cli
from segprep.cli import Parser, UsageError
from segprep.convert import ConvertConfig
from segprep.formats.metadata import parse as parse_metadata
from segprep.palette import PALETTES, PaletteError, load_palette
from segprep.storage import read_bytes

# Beam is imported only once every flag and input has been checked: --help and usage mistakes answer at once.

DEFAULT_OUTPUT = "data/records"


SAMPLE_DIR = "data/sample_voc"
EXAMPLES = """examples:
  python -m pipelines.prepare --runner=DirectRunner
  python -m pipelines.prepare --input_dir ~/VOCdevkit/VOC2012 --output_dir data/voc --splits train,val \\
      --crops_per_image auto --runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing
  python -m pipelines.prepare --input_dir gs://B/VOC2012 --output_dir gs://B/records --runner=DataflowRunner \\
      --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py
  python -m pipelines.prepare --input_dir ~/cityscapes --output_dir data/cityscapes --palette cityscapes \\
      --images 'leftImg8bit/{split}/*/{id}_leftImg8bit.png' --masks 'gtFine/{split}/*/{id}_gtFine_labelIds.png' \\
      --splits train,val --runner=DirectRunner
  python -m pipelines.prepare --input_dir ~/potsdam --output_dir data/potsdam --palette potsdam \\
      --images '4_Ortho_RGBIR/top_potsdam_{id}_RGBIR.tif' --masks '5_Labels_all/top_potsdam_{id}_label.tif' \\
      --bands 4,1,2 --val_fraction 0.2 --runner=DirectRunner
Any other flag is passed to Beam as a pipeline option (--runner, --direct_num_workers, --project, ...)."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser("prepare", prog="python -m pipelines.prepare", description=__doc__.split("\n")[0], epilog=EXAMPLES)
    p.add_argument("--input_dir", help=f"dataset root, local or gs:// (default: the bundled sample, made in "
                                       f"{SAMPLE_DIR})")
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT, help="where shards, errors/ and metadata.json go "
                                                                "(default: %(default)s)")
    cli.layout_flags(p)
    p.add_argument("--splits", help="comma list of the splits to read, as the layout names them (default: every "
                                    "split found that has masks)")
    p.add_argument("--random_crop_splits",
                   help="splits that get random crops; the others get tiles covering each image exactly once "
                        "(default: the splits whose name starts with 'train', in any case: train, training, Train)")
    p.add_argument("--allow_shared_ids", action="store_true",
                   help="let an id that two split lists hold go into both splits (by default the later split "
                        "gets an error record for it: one image in train and val makes validation scores lie)")
    p.add_argument("--extra_inputs", action="append", metavar="NAME=PATTERN",
                   help="a raster beside each image to store with its crops, losslessly at its own depth (repeat "
                        "for several): NAME=PATTERN, a path pattern as --images takes ({id:pad=N} zero-pads the id's "
                        "numbers), e.g. dsm=1_DSM/dsm_potsdam_{id:pad=2}.tif; or NAME=@B[,B]: bands of the image "
                        "file itself, e.g. ir=@4 (names: lower-case letters, digits, _)")
    p.add_argument("--bands", type=cli.bands, metavar="B,B,B",
                   help="for images with more than 3 bands (or to reorder them): the 1-based bands to keep, in "
                        "order, 3 (or 1 for grey), e.g. 4,1,2 makes IR-R-G of R-G-B-IR (default: 1 or 3 bands "
                        "as stored; an alpha band is dropped)")
    p.add_argument("--image_range", type=cli.value_range, metavar="LO,HI",
                   help="for 16-bit (or float) images: map LO..HI linearly onto 0..255, clipped, e.g. 0,4095 for "
                        "12-bit data (default: 8-bit images only; others are error records naming their range)")
    p.add_argument("--crop_size", type=cli.integer(1), default=256, help="crop side in pixels (default: %(default)s)")
    p.add_argument("--crops_per_image", type=cli.integer(1, auto=True), default=None, metavar="N|auto",
                   help="random crops per training image; 'auto' is about one pass over its area (default: auto)")
    p.add_argument("--cat_max_ratio", type=cli.number(0.0, 1.0, low_open=True), default=1.0,
                   help="re-draw a crop (up to 10 draws) while one class covers this share of it or more, as "
                        "MMSegmentation does; 1.0 turns it off (default: %(default)s)")
    p.add_argument("--split_by", default="id", metavar="id|blocks:SIZE",
                   help="with --val_fraction F: id = hold out whole images; blocks:SIZE = cut every image into "
                        "SIZE² blocks (a multiple of --crop_size) and make round(F × its blocks holding data), "
                        "picked by a seeded hash, val: training crops never overlap a val block, val tiles cover "
                        "them (one scene in both splits, without shared pixels) (default: %(default)s)")
    p.add_argument("--nodata", type=cli.nodata_value, metavar="V",
                   help="the images' nodata value: pixels whose every band equals it (the black collar of an "
                        "orthomosaic: 0) hold no imagery, and their mask pixels become 255 (ignored) whatever the "
                        "mask says (default: each GeoTIFF's own GDAL_NODATA; none for other files)")
    p.add_argument("--max_nodata", type=cli.number(0.0, 1.0), default=0.5, metavar="F",
                   help="for images with a nodata value: re-draw a random crop (up to 10 draws) while more than "
                        "this share of it holds no data; tiles of other splits that hold no data at all are not "
                        "written (default: %(default)s)")
    p.add_argument("--oversample_fraction", type=cli.number(0.0, 1.0), default=0.0, metavar="F",
                   help="rare classes on purpose: each random crop is, with probability F, centred on a random "
                        "pixel of a class picked uniformly among the --oversample_classes its image holds (nnU-Net "
                        "uses 0.33); 0 cuts the plain random crops (default: %(default)s)")
    p.add_argument("--oversample_classes", metavar="NAME,...",
                   help="the classes --oversample_fraction centres crops on, by palette name or index (default: "
                        "every class but class 0, the background)")
    p.add_argument("--num_shards", type=cli.integer(0), default=0,
                   help="shards per split; 0 = automatic, about 128 MiB each (default: %(default)s)")
    p.add_argument("--seed", type=cli.integer(0), default=0,
                   help="seed for the random crops and the order of records in shards (default: %(default)s)")
    shipped = "; ".join(f"{name}: {what}" for name, what in PALETTES.items())
    p.add_argument("--palette", help=f"a shipped palette by name — {shipped} — or a palette JSON file {{names, "
                                     "colors, ignore_colors, index_map} (default: voc)")
    p.add_argument("--unknown_colors", choices=lookup.UNKNOWN_MODES, default="error",
                   help="mask colours off the palette: error = the image becomes an error record, ignore = 255, "
                        "nearest = the mask is a lossy (JPEG-damaged) palette mask: each pixel takes the nearest "
                        "palette colour that the mask really holds, never a class it does not hold "
                        "(default: error)")
    p.add_argument("--color_tolerance", type=cli.number(0.0, lookup.MAX_TOLERANCE, low_open=True),
                   default=lookup.DEFAULT_TOLERANCE,
                   help="for nearest: RGB distance (0-442) within which a colour counts as near a palette colour; "
                        f"an area of {lookup.FAR_BLOCK}×{lookup.FAR_BLOCK} px or more beyond it is an error, not "
                        "noise (default: %(default)s)")
    p.add_argument("--image_format", choices=("jpeg", "png"), default="jpeg",
                   help="how crops' images are encoded (default: %(default)s)")
    p.add_argument("--jpeg_quality", type=cli.integer(1, maximum=100), default=95,
                   help="JPEG quality of the crops' images, 1-100 (default: %(default)s)")
    p.add_argument("--exif", choices=convert.EXIF_MODES, default="auto",
                   help="a JPEG's or PNG's EXIF orientation (phones store photos sideways and say how to turn "
                        "them): apply = read images as viewers show them, ignore = as stored, auto = the way its "
                        "mask fits; a mask that fits both ways (a square image, or an upside-down one) is then an "
                        "error record naming the orientation (default: auto)")
    cli.max_pixels_flag(p, convert.DEFAULT_MAX_PIXELS, "it is an error record; tiled and stripped TIFF pairs are "
                        "read window by window instead and have no such limit")
    p.add_argument("--window_size", type=cli.integer(1), default=convert.DEFAULT_WINDOW_SIZE,
                   help="a tiled or stripped TIFF pair (image and mask) wider or taller than this is read, converted "
                        "and cut one window of this side at a time, each window a separate work item, reading only "
                        "the TIFF segments it touches: memory is about 6 bytes a pixel of (window + crop size)², "
                        "~110 MB at the default %(default)s, whatever the tile's size; the crops are the same for "
                        "any window size")
    p.add_argument("--file_format", choices=FILE_FORMATS, default="tfrecord",
                   help="the shards' container: tfrecord (read in sequence: tf.data, DeepLab, Model Garden) or "
                        "array_record (any record by its number: TFDS's as_data_source, Grain, segprep.torch's "
                        "map-style dataset); the same records in the same order either way (default: %(default)s)")
    p.add_argument("--compress", action="store_true", help="gzip the shards (.tfrecord.gz; TFRecord only)")
    p.add_argument("--max_failed_inputs", type=cli.integer(0), default=0,
                   help="exit 0 even if up to this many inputs failed (default: %(default)s)")
    p.add_argument("--limit", type=cli.integer(1), default=None, metavar="N",
                   help="take only the first N ids of each split: a quick trial of a large dataset")
    p.add_argument("--shuffle", choices=("auto", "spill", "beam"), default="auto",
                   help="how crops reach their shards: spill = through local spill files, memory flat in the "
                        "dataset size, for runners whose workers share this machine's disk; beam = Beam's "
                        "shuffle (GroupByKey), for Dataflow, Flink and Spark; auto = spill on the DirectRunner, "
                        "FnApiRunner and PrismRunner, beam elsewhere. Both write the same bytes (default: auto)")
    p.add_argument("--spill_dir", help="local directory for the spill files, which take about the output's size "
                                       "on disk until the shards are written (default: inside --output_dir when "
                                       "it is local, else the system's temp dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's shards, errors and metadata in --output_dir first")
    return p


def build(p, run: output.RunSpec, listing: pairs.Listing, spill_dir: str | None = None, manifest: str | None = None):
    """Adds the prepare stages to the Beam pipeline `p`; → a PCollection holding the final metadata dict. The
    pairs come from the split lists, read inside the pipeline, or from the `manifest` file the driver wrote from
    its listing: the submitted job graph stays small for any dataset. With `spill_dir`, crops reach their shards
    through local spill files (pipelines/spill.py); without, through Beam's shuffle."""
    import apache_beam as beam

    from pipelines import spill
    from pipelines.cutting import CutCrops, CutTiles
    from pipelines.reading import DecodePairs, ReadManifest, ReadPairs, ReadSplitLists
    from pipelines.shards import SpreadCrops, WriteShards
    from pipelines.transforms import ERRORS, FAILED, STATS, TILED, Counters, Finalize, MergeStats

    root, config = listing.root, run.config
    if listing.lists is not None:
        listed = (p
                  | "SplitLists" >> beam.Create(list(listing.lists.items()))
                  | "ReadIds" >> ReadSplitLists(listing.images, listing.masks, listing.limit, listing.shared))  # Pair
    else:
        listed = p | "Manifest" >> beam.Create([manifest]) | "ReadManifest" >> ReadManifest()  # Pair
    listed = listed | "Distribute" >> beam.Reshuffle()  # so reading and decoding fan out over workers
    progress = Counters(sum(run.listed.values()), line=beam_flags.local_runner(p.options))
    read = listed | "ReadPairs" >> ReadPairs(root, progress, config, listing.images)  # PairBytes; TiledPair
    decoded = read.pairs | "DecodePairs" >> DecodePairs(config, progress)  # DecodedPair
    random_splits = frozenset(run.random_splits)
    cut = decoded.decoded | "CutCrops" >> CutCrops(config, random_splits, progress)
    tiled = read[TILED] | "CutTiles" >> CutTiles(config, random_splits, progress)  # giant TIFFs, window by window
    producers = [("Crops", cut.crops)] + [(f"TileCrops{i or ''}", crops) for i, crops in enumerate(tiled["crops"])]
    if spill_dir:
        # Each producer spills its own crops (a Flatten before the spill would hold them all in memory on the
        # local runners); only the small spill-file references are joined.
        refs = [crops | f"Spill{name}" >> spill.SpillCrops(spill_dir, config.seed)  # (split, SpillRef) per file
                for name, crops in producers]
        shards = (refs | "AllSpills" >> beam.Flatten()
                  | "PlanShards" >> spill.PlanShards(run.num_shards)  # ShardTask
                  | "WriteShards" >> WriteShards(run.temp_dir, run.shard_format, tiled[FAILED], spill.spilled_records))
    else:
        shards = ([crops for _, crops in producers] | "AllCrops" >> beam.Flatten()
                  | "SpreadCrops" >> SpreadCrops(config.seed, run.num_shards)  # ((split, shard, n), [(order, …)])
                  | "WriteShards" >> WriteShards(run.temp_dir, run.shard_format, tiled[FAILED]))  # ShardResult
    stats = ((cut[STATS], tiled[STATS]) | "AllStats" >> beam.Flatten()
             | "MergeStats" >> beam.CombinePerKey(MergeStats()))  # (split, Stats)
    errors = (read[ERRORS], decoded[ERRORS], tiled[ERRORS]) | "AllErrors" >> beam.Flatten()  # ErrorRecord
    return {"shards": shards, "stats": stats, "errors": errors} | "Finalize" >> Finalize(
        _Finalizer(run))


@dataclasses.dataclass(frozen=True)
class _Finalizer:
    run: output.RunSpec

    def __call__(self, shards, stats, errors):
        return output.finalize(self.run, shards, stats, errors)


def run_input(args: argparse.Namespace) -> str:
    return args.input_dir or SAMPLE_DIR


@dataclasses.dataclass
class Job:
    """A checked prepare run, not yet started."""

    args: argparse.Namespace
    options: object  # Beam's PipelineOptions
    spec: output.RunSpec  # with the crops' ConvertConfig
    spill: bool  # crops reach their shards through local spill files (else Beam's shuffle)
    listing: pairs.Listing

    @property
    def manifest(self) -> str:
        """Where the driver's listing is written for the pipeline to read (when there are no split lists)."""
        return layout.join(self.spec.temp_dir, MANIFEST)


MANIFEST = "pairs.jsonl"


def _classes(text: str | None, palette) -> tuple[int, ...] | None:
    """--oversample_classes: names or indices of the palette's classes → their indices."""
    if text is None:
        return None
    found = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in palette.names:
            found.append(palette.names.index(item))
        elif item.isdigit() and int(item) < palette.num_classes:
            found.append(int(item))
        else:
            raise UsageError(f"--oversample_classes: {item!r} is not a class of the palette; its classes are "
                             f"{', '.join(palette.names)} (or their indices 0..{palette.num_classes - 1})")
    if not found:
        raise UsageError("--oversample_classes: name at least one class")
    return tuple(sorted(set(found)))


def plan(argv: list[str] | None = None) -> Job:
    """Checks every flag and the input and lists it, raising UsageError for user mistakes; writes nothing but the
    bundled sample (an input: made once in data/sample_voc when no --input_dir is given, so it can be listed).
    Deleting an earlier run (--overwrite) is `run`'s first step, after this."""
    args, beam_args = build_parser().parse_known_args(argv)
    started = time.time()
    config = _convert_config(args)
    out, root, spec = args.output_dir.rstrip("/"), run_input(args).rstrip("/"), pairs.spec_from_args(args)
    _check_cheaply(args, beam_args, out)
    with _layout_errors():
        listing = _list_input(args, spec, root) if args.input_dir else None  # a real input: before Beam loads
    options = beam_flags.parse(beam_args)  # imports Beam: every cheap check is done
    beam_flags.direct_to_fnapi(options)
    with _layout_errors():
        if listing is None:
            sample.ensure_sample(SAMPLE_DIR)
            listing = _list_input(args, spec, root)
        found = listing.splits
        random_splits = (pairs.check_names("--random_crop_splits", args.random_crop_splits, found, "this run has")
                         if args.random_crop_splits is not None else [s for s in found if pairs.is_training(s)])
    _say_what_is_left_out(listing)
    output.check_output(out, args.overwrite, found)
    flags = dict(vars(args), input_dir=root, beam_args=beam_args)
    if args.nodata is not None and args.nodata != args.nodata:
        flags["nodata"] = "nan"  # JSON has no NaN
    run_spec = output.RunSpec(
        output_dir=out, temp_dir=layout.join(out, TEMP_PREFIX + uuid.uuid4().hex[:12]),
        splits=tuple(found), random_splits=tuple(random_splits), listed=listing.counts,
        config=config, shard_format=ShardFormat(args.file_format, args.compress), num_shards=args.num_shards,
        flags=flags, started=started,
        repeated=listing.repeated)
    spill_ = args.shuffle == "spill" or (args.shuffle == "auto" and beam_flags.local_runner(options))
    return Job(args, options, run_spec, spill_, listing)


def _split_blocks(args: argparse.Namespace) -> int | None:
    from segprep import blocks

    try:
        size = blocks.parse(args.split_by)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if size is not None and args.val_fraction is None:
        raise UsageError(f"--split_by {args.split_by} needs --val_fraction F: the share of each image's blocks to "
                         "hold out as val.")
    return size


def _convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The palette and the crops' settings; a UsageError for a bad palette or value."""
    try:
        palette = load_palette(args.palette)
    except (OSError, PaletteError) as e:
        raise UsageError(f"--palette {args.palette}: {e}") from None
    with _layout_errors():
        extra_inputs = extras.parse_flags(args.extra_inputs)

    try:
        return ConvertConfig(crop_size=args.crop_size, crops_per_image=args.crops_per_image, seed=args.seed,
                             palette=palette, unknown_colors=args.unknown_colors,
                             color_tolerance=args.color_tolerance, image_format=args.image_format,
                             jpeg_quality=args.jpeg_quality, cat_max_ratio=args.cat_max_ratio, bands=args.bands,
                             image_range=args.image_range, max_pixels=args.max_pixels,
                             window_size=args.window_size, oversample_fraction=args.oversample_fraction,
                             oversample_classes=_classes(args.oversample_classes, palette), exif=args.exif,
                             nodata=args.nodata, max_nodata=args.max_nodata,
                             split_blocks=_split_blocks(args), split_fraction=args.val_fraction or 0.0,
                             extra_inputs=extra_inputs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_cheaply(args: argparse.Namespace, beam_args: list[str], out: str) -> None:
    """The checks that need neither Beam nor the input listed: the spill dir, Beam flags by name, the output dir
    (the splits' errors files are looked at again once the splits are known)."""
    if args.compress and args.file_format != "tfrecord":
        raise UsageError(f"--compress gzips TFRecord shards; --file_format {args.file_format} shards are read record "
                         "by record at random, which a gzip stream cannot do: leave out --compress.")
    if args.spill_dir and storage.is_remote(args.spill_dir):
        raise UsageError(f"--spill_dir {args.spill_dir}: must be a local directory (the spill files are read back "
                         "by offset); for a run on a cluster use --shuffle beam.")
    unknown = beam_flags.unknown(beam_args)
    if unknown:
        raise UsageError(f"unknown flag {unknown[0]}: neither a prepare flag (see --help) nor a Beam pipeline "
                         "option.")
    output.check_folder("--output_dir", out)
    if args.spill_dir:
        output.check_folder("--spill_dir", args.spill_dir)
    output.check_output(out, args.overwrite, ())
    for flag, text in (("--images", args.images), ("--masks", args.masks)):
        with _layout_errors():
            pairs.Pattern.parse(flag, text)
    if args.input_dir is None:  # the split flags against the sample's lists, before making it
        with _layout_errors():
            names = (pairs.check_names("--splits", args.splits, sample.SPLITS, "the bundled sample lists")
                     if args.splits else sample.SPLITS)
            if args.random_crop_splits is not None:
                pairs.check_names("--random_crop_splits", args.random_crop_splits, names, "this run has")


def _list_input(args: argparse.Namespace, spec: pairs.LayoutSpec, root: str) -> pairs.Listing:
    if args.split_by != "id":
        return layouts.by_blocks(root, spec, args.splits, args.limit)
    return layouts.find(root, spec, args.splits, args.limit, args.seed, args.allow_shared_ids)


@contextlib.contextmanager
def _layout_errors():
    """A layout mistake (a bad pattern, an unknown split, no splits to be found) as a UsageError."""
    try:
        yield
    except pairs.LayoutError as e:
        raise UsageError(str(e)) from None


def _say_what_is_left_out(listing: pairs.Listing) -> None:
    for split, why in listing.skipped.items():
        print(f"prepare: split {split} left out: {why}", file=sys.stderr)
    for split, ids in listing.repeated.items():
        shown = ", ".join(ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else "")
        print(f"prepare: split {split}: its list repeats {len(ids)} id{'s' if len(ids) > 1 else ''} ({shown}); each "
              "is used once", file=sys.stderr)


def pipeline(job: Job, spill_dir: str | None = None):
    """The job's Beam pipeline, built and not run; `spill_dir` is where spill files go when `job.spill`. The
    driver's listing (when the layout has no split lists) is written to the run's temp dir here."""
    import apache_beam as beam

    manifest = None
    if job.listing.listed is not None:
        manifest = job.manifest
        with storage.open_write(manifest) as f:  # a line at a time: a million pairs are never one string
            for split in job.listing.splits:
                for pair in job.listing.pairs(split):
                    f.write((pair.to_json() + "\n").encode("utf-8"))
    p = beam.Pipeline(options=job.options)
    build(p, job.spec, job.listing, spill_dir if job.spill else None, manifest)
    return p


def run(argv: list[str] | None = None) -> int:
    """Runs the pipeline; → exit status (0 ok, 1 some inputs failed). Raises UsageError for user mistakes, before
    anything is written (see `plan`), and when another run is writing the same --output_dir."""
    job = plan(argv)
    try:
        with runlock.hold(job.spec.output_dir, "python -m pipelines.prepare"):
            return _run(job)
    except runlock.FolderError as e:
        raise UsageError(f"--output_dir: {e}") from None


def _run(job: Job) -> int:
    out = job.spec.output_dir
    # Under the lock, looked at again: what another run did meanwhile is seen (and refused) here.
    inv = output.check_output(out, job.args.overwrite, job.spec.splits)
    output.clear_output(out, job.args.overwrite, inv)  # the only destructive step: every check is done before it
    spill_dir = None
    finished = False
    try:
        output.mark(job.spec)
        if job.spill:
            spill_dir = _spill_dir(job)
        with pipeline(job, spill_dir):
            pass  # runs on leaving the block
        finished = True
    except Exception as e:
        full = report.out_of_space(e)
        if full:
            raise storage.StorageError(full) from e
        raise
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
        if not finished:  # a run that raised leaves nothing of its own behind (a killed one: see verify)
            with contextlib.suppress(Exception):
                output.remove_temp_dir(job.spec)
    meta = parse_metadata(read_bytes(metadata_path(out)), metadata_path(out))
    return report.report(meta, out, time.time() - job.spec.started, job.args.max_failed_inputs)


def _spill_dir(job: Job) -> str:
    """Where the spill files go: next to the output when it is local (the disk that must hold the output anyway),
    else in a folder of our own in --spill_dir or the system's temp dir (only that folder is removed afterwards)."""
    out = job.spec.output_dir
    if job.args.spill_dir:
        try:
            runlock.make_folder(job.args.spill_dir)
        except runlock.FolderError as e:
            raise UsageError(f"--spill_dir: {e}") from None
        spill_dir = tempfile.mkdtemp(prefix="segprep-spill-", dir=job.args.spill_dir)
    elif not storage.is_remote(out):
        spill_dir = layout.join(job.spec.temp_dir, output.SPILL_DIR)
    else:
        spill_dir = tempfile.mkdtemp(prefix="segprep-spill-")
    spill_dir = os.path.abspath(spill_dir)
    os.makedirs(spill_dir, exist_ok=True)
    return spill_dir


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.INFO if cli.verbose() else logging.WARNING)
    if not cli.verbose():  # a failing DoFn's ERROR log repeats the exception the run then raises and reports
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    return cli.main("prepare", run, argv)


if __name__ == "__main__":
    sys.exit(main())
