"""Is a folder of shards whole and consistent? Checks prepare's output against its metadata.json.

    python -m segprep.verify data/records
    python -m segprep.verify gs://B/records --quick          # names and counts only

Checks that every shard metadata.json lists exists; that no other shard file (of an earlier run with another
shard count, say) or temp dir of an unfinished run sits beside them; that record counts per shard and per split
match; and, unless --quick, that every record's checksums hold, that it parses with the record schema, that its
image and mask decode to the stored height and width, and that its mask values are classes or 255.

Exit status 0 when whole; 1 with one line per problem naming the file (and record number); 2 for a usage mistake.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from segprep import codec, geo, layout, storage
from segprep.formats import shards
from segprep.formats.shards import TEMP_MARKER, TEMP_PREFIX, is_shard
from segprep.formats.metadata import metadata_path
from segprep.formats import tfrecord, records
from segprep.formats import metadata as md
from segprep.palette import IGNORE_LABEL
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from segprep.progress import Progress


def check_shard(path: str, expected: int, num_classes: int, quick: bool,
                nan_inputs: frozenset = frozenset()) -> tuple[int, list[str]]:
    """→ (records read, problems) for one shard; `nan_inputs`: extra inputs whose declared nodata value is NaN."""
    problems, count, broken = [], 0, False
    try:
        for index, data in shards.read(path, check=not quick, skip_data=quick):
            count += 1
            if not quick:
                problems += [f"{path}: record {index}: {p}" for p in check_record(data, num_classes, nan_inputs)]
    except tfrecord.RecordError as e:
        problems.append(f"{path}: {e}")
        broken = True
    except OSError as e:
        problems.append(f"{path}: cannot read: {e}")
    if count != expected and not broken:
        problems.append(f"{path}: holds {count} records; metadata.json says {expected}")
    return count, problems


def check_record(data: bytes, num_classes: int, nan_inputs: frozenset = frozenset()) -> list[str]:
    features, problems = records.check_example(data)
    if problems:
        return problems
    height, width = features[records.IMAGE_HEIGHT][0], features[records.IMAGE_WIDTH][0]
    try:
        image = codec.decode_image(features[records.IMAGE_ENCODED][0])
        if image.shape[:2] != (height, width):
            problems.append(f"image is {image.shape[1]}×{image.shape[0]}, the record says {width}×{height}")
    except codec.DecodeError as e:
        problems.append(f"image: {e}")
    try:
        mask, kind = codec.decode_mask(features[records.MASK_ENCODED][0])
        if kind != "index":
            problems.append(f"mask is a {kind} PNG, not 8-bit single-channel class indices")
        elif mask.shape != (height, width):
            problems.append(f"mask is {mask.shape[1]}×{mask.shape[0]}, the record says {width}×{height}")
        else:
            present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
            bad = [int(v) for v in present if v >= num_classes and v != IGNORE_LABEL]
            if bad:
                problems.append(f"mask holds values {', '.join(map(str, bad[:5]))} outside the {num_classes} "
                                "classes and 255")
            listed = features.get(records.CLASS_PRESENT)  # absent in shards written before it was recorded
            held = [int(v) for v in present if v != IGNORE_LABEL]
            if listed is not None and list(listed) != held:
                problems.append(f"{records.CLASS_PRESENT} lists {list(listed)} but the mask holds classes {held}")
    except codec.DecodeError as e:
        problems.append(f"mask: {e}")
    problems += check_extras(features, height, width, nan_inputs)
    transform = features.get(records.GEO_TRANSFORM)
    if transform is not None and (len(transform[0]) != geo.TRANSFORM_BYTES.size
                                  or not geo.is_finite(geo.unpack(transform[0]))):
        problems.append(f"{records.GEO_TRANSFORM} is not 6 finite little-endian float64")
    if (transform is None) != (features.get(records.GEO_CRS) is None):
        problems.append(f"{records.GEO_CRS} and {records.GEO_TRANSFORM} come together")
    return problems


def check_extras(features: dict, height: int, width: int, nan_inputs: frozenset = frozenset()) -> list[str]:
    """Each extra input's crop decodes, at the record's size, with its stated type and bands, and finite (NaN
    allowed in `nan_inputs`, whose nodata value it is)."""
    problems = []
    try:
        found = records.extras_of(features)
    except ValueError as e:
        return [str(e)]
    for name, crop in found.items():
        try:
            array = crop.array(height, width)
        except Exception as e:  # noqa: BLE001 - a damaged PNG or zlib stream: this record's problem
            problems.append(f"extra input {name}: does not decode as {crop.format} {crop.dtype} ({e})")
            continue
        if array.dtype.kind == "f" and name in nan_inputs and np.isinf(array).any():
            problems.append(f"extra input {name}: holds infinite values")
        elif array.dtype.kind == "f" and name not in nan_inputs and not np.isfinite(array).all():
            problems.append(f"extra input {name}: holds NaN or infinite values")
    return problems


def verify(out: str, quick: bool = False, jobs: int = -1) -> tuple[list[str], str]:
    """→ (problems, summary) for the output dir `out`."""
    out = out.rstrip("/")
    path = metadata_path(out)
    if not storage.exists(path):
        why = ("it holds shards: the prepare run did not finish" if any(is_shard(p) for p in
                                                                      storage.match(layout.join(out, "*")))
               else "it is not a prepare output dir")
        return [f"{path}: missing ({why})"], ""
    try:
        meta = md.parse(storage.read_bytes(path), path)
    except md.MetadataError as e:
        return [str(e)], ""
    problems = []
    listed = {name: (split, i) for split, entry in meta.splits.items() for i, name in enumerate(entry.shards)}
    present = {storage.basename(p) for p in storage.match(layout.join(out, "*"))}
    for name in sorted(present):
        if is_shard(name) and name not in listed:
            problems.append(f"{layout.join(out, name)}: a shard metadata.json does not list (an earlier run's? "
                            "prepare --overwrite removes them; readers that glob would read it twice)")
    for name in sorted(temp_dirs(out)):
        if storage.exists(layout.join(out, name, TEMP_MARKER)) or not _holds_files(layout.join(out, name)):
            problems.append(f"{layout.join(out, name)}: temp dir of an unfinished run (prepare --overwrite removes "
                            "it)")
        else:
            problems.append(f"{layout.join(out, name)}: named like a run's temp dir, but without segprep's marker "
                            "in it: prepare --overwrite leaves it; remove it yourself if it is not yours")
    tasks = []
    for name, (split, i) in listed.items():
        if name not in present:
            problems.append(f"{layout.join(out, name)}: listed in metadata.json but missing")
        else:
            tasks.append((layout.join(out, name), split, meta.splits[split].shard_records[i]))
    _check_all(tasks, meta.num_classes, quick, jobs, storage.is_remote(out), problems, meta.nan_inputs)
    for split, entry in meta.splits.items():  # the shards' counts against the split's (each shard's: above)
        if sum(entry.shard_records) != entry.records:
            problems.append(f"{path}: split {split} has {entry.records} records but its shards list "
                            f"{sum(entry.shard_records)}")
    total = sum(e.records for e in meta.splits.values())
    summary = (f"{len(listed)} shards, {total:,} records in {len(meta.splits)} splits "
               f"({'names and counts' if quick else 'every record decoded'})")
    return problems, summary


def temp_dirs(out: str) -> set[str]:
    """Names of the folders in `out` named like a run's temp dir, empty ones included."""
    found = {p[len(out) + 1:].split("/", 1)[0] for p in storage.match(layout.join(out, TEMP_PREFIX + "*", "*"))}
    return found | {storage.basename(p) for p in storage.local_folders(out, TEMP_PREFIX)}


def _holds_files(folder: str) -> bool:
    if storage.is_remote(folder):
        return bool(storage.match(layout.join(folder, "**")))
    return any(names for _, _, names in os.walk(folder))


def _check_all(tasks, num_classes, quick, jobs, remote, problems, nan_inputs=frozenset()) -> None:
    from joblib import Parallel, delayed

    progress = Progress("verify", len(tasks), "shards")
    run = Parallel(n_jobs=jobs, backend="threading" if remote or quick else "loky", return_as="generator")
    for _, found in run(delayed(check_shard)(path, expected, num_classes, quick, nan_inputs)
                        for path, _, expected in tasks):
        problems += found
        progress.update()
    progress.close()


def build_parser() -> Parser:
    p = Parser("verify", prog="python -m segprep.verify", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("output_dir", help="prepare's --output_dir, local or gs://")
    p.add_argument("--quick", action="store_true",
                   help="check file names and record counts only, not every record's checksums and contents")
    p.add_argument("--jobs", type=cli.jobs, default=-1,
                   help="shards checked in parallel (processes for local shards, threads for gs://); -1 = one "
                        "per core (default: %(default)s)")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.output_dir.rstrip("/")
    if not storage.exists(metadata_path(out)) and not storage.match(layout.join(out, "*")) and not \
            temp_dirs(out):
        raise UsageError(f"{out} holds no prepare output (no metadata.json, no shards): pass prepare's "
                         "--output_dir.")
    problems, summary = verify(args.output_dir, args.quick, args.jobs)
    for line in problems:
        print(f"verify: {line}")
    if problems:
        print(f"verify: {args.output_dir.rstrip('/')}: {len(problems)} problem{'s' if len(problems) > 1 else ''}",
              file=sys.stderr)
        return 1
    print(f"verify: {args.output_dir.rstrip('/')} is whole: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main("verify", run, argv)


if __name__ == "__main__":
    sys.exit(main())
