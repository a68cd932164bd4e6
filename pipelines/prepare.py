"""Pascal VOC images + colour masks → shuffled, sharded TFRecords of 256×256 crops, on Apache Beam.

    python -m pipelines.prepare --runner=DirectRunner                       # bundled sample → data/records
    python -m pipelines.prepare --input_dir VOC_ROOT --output_dir OUT --runner=DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing
    python -m pipelines.prepare --input_dir gs://B/VOC2012 --output_dir gs://B/records \
        --runner=DataflowRunner --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py

Exit status: 0 when every listed input was written, 1 when some inputs failed (everything else is still written;
see OUT/errors/SPLIT.jsonl), 2 for a usage mistake (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import output
from pipelines.transforms import (ERRORS, STATS, CutCrops, DecodePairs, Finalize, MergeStats, Progress, ReadPairs,
                                  SpreadCrops, WriteShards, read_bytes)
from segprep import dataset, layout, lookup, sample
from segprep import cli
from segprep.cli import Parser, UsageError
from segprep.convert import ConvertConfig
from segprep.metadata import parse as parse_metadata
from segprep.palette import PaletteError, load_palette

DEFAULT_OUTPUT = "data/records"
SAMPLE_DIR = "data/sample_voc"

EXAMPLES = """examples:
  python -m pipelines.prepare --runner=DirectRunner
  python -m pipelines.prepare --input_dir ~/VOCdevkit/VOC2012 --output_dir data/voc --splits train,val \\
      --crops_per_image auto --runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing
  python -m pipelines.prepare --input_dir gs://B/VOC2012 --output_dir gs://B/records --runner=DataflowRunner \\
      --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py

Any other flag is passed to Beam as a pipeline option (--runner, --direct_num_workers, --project, ...)."""


def _int_flag(minimum: int, auto: bool = False, maximum: int | None = None):
    """An argparse type: an integer in [`minimum`, `maximum`] (or 'auto' → None when `auto`), with a one-line
    complaint."""
    if maximum is not None:
        what = f"an integer from {minimum} to {maximum}"
    else:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
    what += " or 'auto'" if auto else ""

    def parse(value: str) -> int | None:
        if auto and value == "auto":
            return None
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < minimum or (maximum is not None and n > maximum):
            raise argparse.ArgumentTypeError(f"must be {what} (received {value!r})")
        return n

    return parse


def _float_flag(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] when `low_open`)."""
    what = f"a number {'>' if low_open else '≥'} {low:g} and ≤ {high:g}"

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            x = math.nan
        if not (low < x <= high if low_open else low <= x <= high):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {what} (received {value!r})")
        return x

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser("prepare", prog="python -m pipelines.prepare", description=__doc__.split("\n")[0], epilog=EXAMPLES)
    p.add_argument("--input_dir", help=f"Pascal VOC root, local or gs:// (default: the bundled sample, made in "
                                       f"{SAMPLE_DIR})")
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT, help="where shards, errors/ and metadata.json go "
                                                                "(default: %(default)s)")
    p.add_argument("--splits", help="comma list of ImageSets/Segmentation lists (default: every list there)")
    p.add_argument("--random_crop_splits",
                   help="splits that get random crops; the others get tiles covering each image exactly once "
                        "(default: the splits whose name starts with 'train')")
    p.add_argument("--crop_size", type=_int_flag(1), default=256, help="crop side in pixels (default: %(default)s)")
    p.add_argument("--crops_per_image", type=_int_flag(1, auto=True), default=None, metavar="N|auto",
                   help="random crops per training image; 'auto' is about one pass over its area (default: auto)")
    p.add_argument("--cat_max_ratio", type=_float_flag(0.0, 1.0, low_open=True), default=1.0,
                   help="re-draw a crop (up to 10 draws) while one class covers this share of it or more, as "
                        "MMSegmentation does; 1.0 turns it off (default: %(default)s)")
    p.add_argument("--num_shards", type=_int_flag(0), default=0,
                   help="shards per split; 0 = automatic, about 128 MiB each (default: %(default)s)")
    p.add_argument("--seed", type=_int_flag(0), default=0,
                   help="seed for the random crops and the order of records in shards (default: %(default)s)")
    p.add_argument("--palette", help="palette JSON file {names, colors, ignore_colors} (default: Pascal VOC)")
    p.add_argument("--unknown_colors", choices=lookup.UNKNOWN_MODES, default="error",
                   help="mask colours off the palette: error = the image becomes an error record, ignore = 255, "
                        "nearest = the mask is a lossy (JPEG-damaged) palette mask: each pixel takes the nearest "
                        "palette colour that the mask really holds, never a class it does not hold "
                        "(default: error)")
    p.add_argument("--color_tolerance", type=_float_flag(0.0, lookup.MAX_TOLERANCE, low_open=True),
                   default=lookup.DEFAULT_TOLERANCE,
                   help="for nearest: RGB distance (0-442) within which a colour counts as near a palette colour; "
                        f"an area of {lookup.FAR_BLOCK}×{lookup.FAR_BLOCK} px or more beyond it is an error, not "
                        "noise (default: %(default)s)")
    p.add_argument("--image_format", choices=("jpeg", "png"), default="jpeg",
                   help="how crops' images are encoded (default: %(default)s)")
    p.add_argument("--jpeg_quality", type=_int_flag(1, maximum=100), default=95,
                   help="JPEG quality of the crops' images, 1-100 (default: %(default)s)")
    p.add_argument("--compress", action="store_true", help="gzip the shards (.tfrecord.gz)")
    p.add_argument("--max_failed_inputs", type=_int_flag(0), default=0,
                   help="exit 0 even if up to this many inputs failed (default: %(default)s)")
    p.add_argument("--limit", type=_int_flag(1), default=None, metavar="N",
                   help="take only the first N ids of each split: a quick trial of a large dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's shards, errors and metadata in --output_dir first")
    return p


def _check_output(out: str, overwrite: bool) -> None:
    """An output dir holding an earlier run is refused without --overwrite."""
    done, _ = output.existing_outputs(out)
    if done and not overwrite:
        raise UsageError(f"--output_dir {out} already holds {len(done)} files of an earlier run "
                         f"(e.g. {done[0].rsplit('/', 1)[-1]}); pass --overwrite to replace them, or choose another "
                         "--output_dir.")


def _clear_output(out: str, overwrite: bool) -> None:
    done, temp = output.existing_outputs(out)
    if overwrite:
        output.clear(done + temp)
        if done or temp:
            print(f"prepare: --overwrite: deleted {len(done) + len(temp)} files of an earlier run in {out}",
                  file=sys.stderr)
    elif temp:
        print(f"prepare: {out} holds {len(temp)} temp files of an unfinished run; --overwrite removes them",
              file=sys.stderr)


def build(p: beam.Pipeline, args: argparse.Namespace, lists: dict[str, list[str]], config: ConvertConfig,
          run: output.RunSpec):
    """Adds the prepare stages to `p`; → a PCollection holding the final metadata dict."""
    ids = [(split, image_id) for split, image_ids in lists.items() for image_id in image_ids]
    listed = (p
              | "ListIds" >> beam.Create(ids)  # (split, image_id)
              | "Distribute" >> beam.Reshuffle())  # so reading and decoding fan out over workers
    runner = str(p.options.view_as(StandardOptions).runner or "DirectRunner")
    progress = Progress(len(ids), line=any(name in runner for name in ("Direct", "FnApi", "Prism")))
    read = listed | "ReadPairs" >> ReadPairs(run_input(args), progress)  # PairBytes
    decoded = read.pairs | "DecodePairs" >> DecodePairs(run_input(args), config, progress)  # ((split, id), arrays)
    cut = decoded.decoded | "CutCrops" >> CutCrops(config, frozenset(run.random_splits), progress)
    shards = (cut.crops
              | "SpreadCrops" >> SpreadCrops(args.seed, args.num_shards)  # ((split, shard, n), [(order, bytes)])
              | "WriteShards" >> WriteShards(run.temp_dir, run.compressed))  # ShardResult
    stats = cut[STATS] | "MergeStats" >> beam.CombinePerKey(MergeStats())  # (split, Stats)
    errors = (read[ERRORS], decoded[ERRORS]) | "AllErrors" >> beam.Flatten()  # ErrorRecord
    return {"shards": shards, "stats": stats, "errors": errors} | "Finalize" >> Finalize(
        _Finalizer(run))


@dataclasses.dataclass(frozen=True)
class _Finalizer:
    run: output.RunSpec

    def __call__(self, shards, stats, errors):
        return output.finalize(self.run, shards, stats, errors)


def _pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam drops flags it does not know with only a log line; a mistyped flag is a usage error here."""
    options = PipelineOptions(beam_args)
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args" warning: we say it better below
    try:
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options()))
    finally:
        beam_log.setLevel(level)
    if unknown:
        raise UsageError(f"unknown flag --{unknown[0]}: neither a prepare flag (see --help) nor a Beam pipeline "
                         "option.")
    return options


def run_input(args: argparse.Namespace) -> str:
    return args.input_dir or SAMPLE_DIR


def run(argv: list[str] | None = None) -> int:
    """Runs the pipeline; → exit status (0 ok, 1 some inputs failed). Raises UsageError for user mistakes, before
    anything is written: every flag is checked first, then the sample is made (when no --input_dir is given),
    then an earlier run is deleted (--overwrite), and only then does the pipeline run."""
    args, beam_args = build_parser().parse_known_args(argv)
    started = time.time()
    try:
        palette = load_palette(args.palette, read_bytes if args.palette and "://" in args.palette else None)
    except (OSError, PaletteError) as e:
        raise UsageError(f"--palette {args.palette}: {e}") from None
    try:
        config = ConvertConfig(crop_size=args.crop_size, crops_per_image=args.crops_per_image, seed=args.seed,
                               palette=palette, unknown_colors=args.unknown_colors,
                               color_tolerance=args.color_tolerance, image_format=args.image_format,
                               jpeg_quality=args.jpeg_quality, cat_max_ratio=args.cat_max_ratio)
    except ValueError as e:
        raise UsageError(str(e)) from None
    options = _pipeline_options(beam_args)
    out = args.output_dir.rstrip("/")
    _check_output(out, args.overwrite)
    try:
        if args.input_dir is None:  # check the split flags against the sample's lists before making it
            names = (dataset.check_names("--splits", args.splits, sample.SPLITS, "the bundled sample lists")
                     if args.splits else sample.SPLITS)
            if args.random_crop_splits is not None:
                dataset.check_names("--random_crop_splits", args.random_crop_splits, names, "this run has")
            sample.ensure_sample(SAMPLE_DIR)
        root = run_input(args).rstrip("/")
        lists = dataset.read_splits(root, args.splits, args.limit)
        random_splits = (dataset.check_names("--random_crop_splits", args.random_crop_splits, list(lists),
                                             "this run has")
                         if args.random_crop_splits is not None else [s for s in lists if s.startswith("train")])
    except dataset.DatasetError as e:
        raise UsageError(str(e)) from None
    _clear_output(out, args.overwrite)  # the only destructive step: every check is done before it

    flags = {k: v for k, v in vars(args).items()}
    flags["input_dir"] = root
    flags["beam_args"] = beam_args
    spec = output.RunSpec(
        output_dir=out, temp_dir=layout.join(out, layout.TEMP_PREFIX + uuid.uuid4().hex[:12]),
        splits=tuple(lists), random_splits=tuple(random_splits), listed={s: len(v) for s, v in lists.items()},
        palette=palette, crop_size=args.crop_size, image_format=args.image_format, compressed=args.compress,
        seed=args.seed, num_shards=args.num_shards, flags=flags, started=started)

    with beam.Pipeline(options=options) as p:
        build(p, args, lists, config, spec)
    meta = parse_metadata(read_bytes(layout.metadata_path(out)), layout.metadata_path(out))
    return report(meta, out, time.time() - started, args.max_failed_inputs)


def report(meta: dict, out: str, seconds: float, max_failed: int) -> int:
    """Prints the end summary; → exit status."""
    splits = meta["splits"]
    crops = sum(s["records"] for s in splits.values())
    images = sum(s["images_used"] for s in splits.values())
    failed = sum(s["inputs_failed"] for s in splits.values())
    mpx = sum(s["source_pixels"] for s in splits.values()) / 1e6
    shards = sum(len(s["shards"]) for s in splits.values())
    lines = [f"prepare: {images} images → {crops} crops in {_plural(shards, 'shard')}, {failed} failed, "
             f"{seconds:.1f} s ({crops / max(seconds, 1e-9):.1f} crops/s, {mpx / max(seconds, 1e-9):.2f} source "
             f"Mpx/s) → {out}"]
    for name, s in splits.items():
        notes = [f"{s['images_used']}/{s['images_listed']} images", f"{s['records']} crops ({s['crop_mode']})",
                 _plural(len(s["shards"]), "shard")]
        for key, what in (("unknown_pixels_snapped", "snapped to a present palette colour"),
                          ("unknown_pixels_ignored", "ignored (255)")):
            if s.get(key):
                notes.append(f"{s[key]:,} off-palette mask pixels {what}")
        if s["inputs_failed"]:
            notes.append(f"{s['inputs_failed']} failed → {layout.join(out, s['errors_file'])}")
        lines.append(f"  {name}: " + ", ".join(notes))
    print("\n".join(lines))
    if failed > max_failed:
        print(f"prepare: {failed} inputs failed (allowed: {max_failed}); every other input was written. "
              "See the errors files above.", file=sys.stderr)
        return 1
    return 0


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    return cli.main("prepare", run, argv)


if __name__ == "__main__":
    sys.exit(main())
