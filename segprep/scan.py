"""What is in a dataset, before prepare: image formats, mask sizes and kinds, and every mask colour or value.

    python -m segprep.scan --input_dir VOC_ROOT
    python -m segprep.scan --input_dir gs://B/aerial --splits train --write_palette palette.json
    python -m pipelines.prepare --input_dir gs://B/aerial --palette palette.json   # one class per colour
    python -m segprep.scan --input_dir ~/cityscapes --palette cityscapes \
        --images 'leftImg8bit/{split}/*/{id}_leftImg8bit.png' --masks 'gtFine/{split}/*/{id}_gtFine_labelIds.png'

Takes prepare's layout flags (--images, --masks, --split_lists, --val_fraction, --group_by, --splits). Reads the
masks and images whole (in parallel with joblib: processes for local files, threads for gs://); with --no_leakage,
the images' headers only.
Per split: how many pairs, the image formats (JPEG / PNG / TIFF, bands, bit depth, tiled or stripped, compression),
the mask sizes (min / median / max) and kinds (colour, palette, index, with bit depth). Then every colour (or index
value) with its pixel and image counts and what the active --palette (default Pascal VOC) makes of it. Index masks
holding only 0 and 255 are named: with a palette that has no index_map, their 255 is the ignore label. Then leakage
between splits, one line a pair of images (segprep/tools/leakage.py): the same id in two splits, byte-identical
image files, and near-duplicates by perceptual hash (re-encoded, resized; --duplicate_distance sets how near). With
--extra_inputs (prepare's), each extra input's kinds (type, bands, format) and value range, and the pairs whose
raster is missing, of another size or not finite. Last, the prepare command that reads this tree.

Which colours are classes: a colour that is "solid" (a pixel whose 3×3 neighbourhood is all that colour) at
MIN_SOLID = 9 or more pixels across the dataset — one 5×5 patch is enough, a 1–2 px line never is — is a class
candidate, unless it lies within --tolerance of a more frequent class colour: then it is compression noise around
that colour (a mask saved as JPEG once), as are colours short of that (edges, ringing, anti-aliasing).
--write_palette writes the class colours as a palette file prepare accepts: Pascal VOC's names where the colours
are VOC's, class_N otherwise, and VOC's border colour (224, 224, 192) as an ignore colour. From
lossy masks the colours are estimates: each is put back on a VOC colour, or on 0 / 255, within 2 levels (JPEG
moves a flat (0, 0, 255) to (0, 0, 254)); check the file, and prepare such masks with --unknown_colors nearest.
"""

from __future__ import annotations

import json
import shlex
import sys
import time

from segprep import cli, extras, geo, layouts, lookup, pairs, storage
from segprep.cli import Parser, UsageError, examples
from segprep.convert import DEFAULT_MAX_PIXELS
from segprep.palette import PALETTES, Palette, PaletteError, load_palette
from segprep.progress import Progress
from segprep.tools import leakage
from segprep.tools.colors import MIN_SOLID, Value, in_palette, is_binary, palette_for, values_of
from segprep.tools.mask_scan import MaskScan, scan_pair


def report(scans: list[MaskScan], lists, palette: Palette, palette_name: str, tolerance: float,
           seconds: float, show_all: bool, values_by_kind: tuple[list[Value], list[Value]]) -> list[str]:
    lines = [f"scan: {len(scans)} masks in {len(lists)} split{'s' if len(lists) != 1 else ''}, {seconds:.1f} s"]
    for split in lists:
        ok = [s for s in scans if s.split == split and s.error is None]
        failed = [s for s in scans if s.split == split and s.error is not None]
        images: dict[str, int] = {}
        for s in scans:
            if s.split == split and s.image is not None:
                images[s.image.label] = images.get(s.image.label, 0) + 1
        bad_images = [s for s in scans if s.split == split and s.image_error is not None and s.error is None]
        turned = sum(1 for s in scans if s.split == split and s.image is not None and s.image.orientation != 1)
        if images or bad_images:
            lines.append(f"  {split}: images " + ", ".join(f"{k} ×{n}" for k, n in sorted(images.items()))
                         + (f"; {len(bad_images)} unreadable" if bad_images else "")
                         + (f"; {turned} with an EXIF orientation (viewers turn them; prepare --exif auto reads "
                            "each the way its mask fits)" if turned else ""))
            lines += [f"    {s.image_id}: image: {s.image_error}" for s in bad_images[:5]]
        line = f"  {split}: {len(ok)} masks"
        if ok:
            by_area = sorted(ok, key=lambda s: (s.height * s.width, s.width))
            median = by_area[len(by_area) // 2]
            line += (f", sizes {by_area[0].width}×{by_area[0].height} / {median.width}×{median.height} / "
                     f"{by_area[-1].width}×{by_area[-1].height} (w×h: min / median / max)")
            kinds: dict[str, int] = {}
            for s in ok:
                kinds[s.label] = kinds.get(s.label, 0) + 1
            line += "; " + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items()))
        if failed:
            line += f"; {len(failed)} unreadable"
        lines.append(line)
        lines += [f"    {s.image_id}: {s.error}" for s in failed[:10]]
        if len(failed) > 10:
            lines.append(f"    ... {len(failed) - 10} more")
    for index in (False, True):
        values = values_by_kind[index]
        if not values:
            continue
        total = sum(v.pixels for v in values)
        shown = [v for v in values if show_all or v.role == "class"]
        what = "index values" if index else "colours"
        lines.append(f"mask {what}: {len(values):,} distinct, {sum(v.role == 'class' for v in values)} look like "
                     f"classes; against the {palette_name} palette:")
        lines.append(f"  {'value' if index else 'colour':17s} {'pixels':>14s} {'share':>7s} {'images':>7s}  "
                     f"{'palette':18s} note")
        for v in shown:
            label = str(v.key) if index else str(v.color())
            note = {"class": "", "thin": "thin: edges or specks only"}.get(
                v.role, f"noise near {lookup.key_color(v.near or 0)}")
            lines.append(f"  {label:17s} {v.pixels:14,d} {100 * v.pixels / total:6.2f}% {v.images:7,d}  "
                         f"{in_palette(v, palette, index):18s} {note}".rstrip())
        if not index:
            noise = [v for v in values if v.role == "noise"]
            thin = [v for v in values if v.role == "thin"]
            if noise and not show_all:
                lines.append(f"  + {len(noise):,} colours ({100 * sum(v.pixels for v in noise) / total:.2f}% of "
                             f"pixels) within {tolerance:g} of the colours above: compression noise "
                             "(prepare --unknown_colors nearest restores them)")
            if thin and not show_all:
                lines.append(f"  + {len(thin):,} colours ({100 * sum(v.pixels for v in thin) / total:.2f}% of "
                             f"pixels) solid (3×3 of one colour) at fewer than {MIN_SOLID} pixels: edges, ringing or "
                             "anti-aliasing")
            missing = [v for v in values if v.role == "class" and in_palette(v, palette, False) == "NOT IN PALETTE"]
            if missing:
                lines.append(f"  {len(missing)} class colours are not in the {palette_name} palette: write a "
                             "palette with --write_palette FILE and pass prepare --palette FILE")
        elif is_binary(values) and not palette.index_map:
            masks = sum(1 for s in scans if s.kind == "index" and s.keys is not None)
            lines.append(f"  the index masks ({masks}) hold only 0 / 255: with the {palette_name} palette 255 is the "
                         "ignore label, so every 255 pixel would be ignored and a model never learns what it "
                         "marks. If 255 is a class (a building, a road): prepare --palette inria, or a palette with "
                         '"index_map": {"0": 0, "255": 1} (--write_palette FILE writes one)')
        elif index:
            missing = [v for v in values if in_palette(v, palette, True) == "NOT IN PALETTE"]
            if missing:
                lines.append(f"  {len(missing)} index values are not classes of the {palette_name} palette: pass "
                             "a palette whose index_map maps them (or --write_palette FILE)")
    return lines


def geo_report(scans: list[MaskScan], nodata: float | None) -> list[str]:
    """Georeferenced images: how many, their CRSs, the nodata values they declare, and the pairs whose image and
    mask lie on different grids (prepare's grid_mismatch)."""
    read = [s for s in scans if s.image is not None]
    placed = [s for s in read if s.grid is not None]
    if not placed:
        return [f"nodata: --nodata {nodata:g}: pixels whose every band equals it get mask 255"] if nodata is not None \
            else []
    crs: dict[str, int] = {}
    values: dict[str, int] = {}
    for s in placed:
        crs[s.grid.crs] = crs.get(s.grid.crs, 0) + 1
        if s.grid.nodata is not None:
            key = f"{s.grid.nodata:g}"
            values[key] = values.get(key, 0) + 1
    line = (f"georeferenced: {len(placed)} of {len(read)} images ("
            + ", ".join(f"{c if len(c) < 30 else c[:27] + '...'} ×{n}" for c, n in sorted(crs.items())) + ")")
    if nodata is not None:
        line += f"; --nodata {nodata:g} for every image"
    elif values:
        line += "; nodata " + ", ".join(f"{v} ×{n}" for v, n in sorted(values.items())) + " (their pixels get mask " \
                "255; crops avoid them, --max_nodata)"
    lines = [line]
    apart = [s for s in placed if s.mask_grid is not None and not geo.same_grid(s.grid, s.mask_grid)]
    if apart:
        lines.append(f"  {len(apart)} pairs whose image and mask lie on different grids (prepare makes error "
                     "records of them):")
        lines += [f"    {s.image_id}: image {s.grid.describe()}, mask {s.mask_grid.describe()}" for s in apart[:5]]
        if len(apart) > 5:
            lines.append(f"    ... {len(apart) - 5} more")
    return lines


def extras_report(scans: list[MaskScan], extra_inputs) -> list[str]:
    """Per extra input: its kinds, value range, and the pairs prepare would make error records of."""
    lines = []
    for extra in extra_inputs:
        found = [(s, s.extras[extra.name]) for s in scans if extra.name in s.extras]
        good = [(s, e) for s, e in found if e.error is None]
        kinds: dict[str, int] = {}
        for _, e in good:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        lows = [e.low for _, e in good if e.low is not None]
        highs = [e.high for _, e in good if e.high is not None]
        line = f"extra input {extra.name} ({extra.source}): {len(good)} of {len(found)} read"
        if kinds:
            line += "; " + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items()))
        if lows:
            line += f"; values {min(lows):.6g} … {max(highs):.6g}"
        lines.append(line)
        other = [(s, e) for s, e in good if s.image is not None and (e.height, e.width) != (s.image.height,
                                                                                             s.image.width)]
        bad = [(s, e) for s, e in good if e.nonfinite]
        for label, items, say in (
                ("unreadable or missing", [(s, e) for s, e in found if e.error is not None], lambda s, e: e.error),
                ("of another size than the image", other,
                 lambda s, e: f"{e.width}×{e.height}, image {s.image.width}×{s.image.height}"),
                ("holding NaN or infinity", bad, lambda s, e: f"{e.nonfinite:,} NaN or infinite")):
            if items:
                lines.append(f"  {len(items)} {label} (prepare makes error records of them):")
                lines += [f"    {s.image_id}: {say(s, e)}" for s, e in items[:5]]
                if len(items) > 5:
                    lines.append(f"    ... {len(items) - 5} more")
    return lines


def _scan_all(root: str, listing: pairs.Listing, jobs: int, max_value: int, fingerprint: bool,
              max_pixels: int = DEFAULT_MAX_PIXELS, extra_inputs=()) -> list[MaskScan]:
    from joblib import Parallel, delayed

    tasks = [pair for split in listing.splits for pair in listing.pairs(split)]
    progress = Progress("scan", len(tasks), "masks")
    backend = "threading" if storage.is_remote(root) else "loky"  # gs:// is I/O-bound; decoding is not
    results = []
    run = Parallel(n_jobs=jobs, backend=backend, return_as="generator", batch_size="auto")
    for scan in run(delayed(scan_pair)(root, pair, max_value, fingerprint, max_pixels, extra_inputs,
                                       listing.images) for pair in tasks):
        results.append(scan)
        progress.update()
    progress.close()
    return results


def prepare_command(root: str, spec: pairs.LayoutSpec, listing: pairs.Listing, palette_arg: str | None,
                    scans: list[MaskScan], values_by_kind: tuple[list[Value], list[Value]],
                    splits: str | None = None, extra_inputs=(), nodata: float | None = None) -> tuple[str, list[str]]:
    """The prepare command that reads this tree (with `palette_arg`, the user's or the one just written), and notes
    on the flags it chose."""
    args = ["python", "-m", "pipelines.prepare", "--input_dir", root, "--output_dir", "OUT", *spec.flags()]
    notes = []
    if splits or listing.skipped:
        args += ["--splits", ",".join(listing.splits)]
    colors, indices = values_by_kind
    palette_flag = palette_arg
    if indices and not colors and is_binary(indices) and palette_arg is None:
        palette_flag = "inria"
        notes.append("--palette inria reads 0 as background and 255 as building; for another class, write your own "
                     "with scan --write_palette FILE")
    if palette_flag:
        args += ["--palette", palette_flag]
    if any(v.role == "noise" for v in colors):
        args += ["--unknown_colors", "nearest"]
        notes.append("--unknown_colors nearest: the masks hold compression noise around their class colours")
    infos = [s.image for s in scans if s.image is not None]
    bands = max((i.bands for i in infos if not i.kind), default=3)
    if bands > 3:
        args += ["--bands", "1,2,3"]
        notes.append(f"--bands: the images have {bands} bands; pick the 3 to keep, in order (e.g. 4,1,2 for IR-R-G)")
    wide = sorted({i.bits for i in infos if i.bits not in ("8-bit", "1-bit")})
    if wide:
        args += ["--image_range", "0,65535"]
        notes.append(f"--image_range: the images are {', '.join(wide)}; narrow the range to your data's (12-bit "
                     "sensors: 0,4095)")
    for extra in extra_inputs:
        args += ["--extra_inputs", f"{extra.name}={extra.source}"]
    if nodata is not None:
        args += ["--nodata", f"{nodata:g}"]
    args.append("--runner=DirectRunner")
    return shlex.join(args), notes


def build_parser() -> Parser:
    p = Parser("scan", prog="python -m segprep.scan", description=__doc__.split("\n")[0], epilog=examples(__doc__))
    p.add_argument("--input_dir", required=True, help="dataset root, local or gs://")
    cli.layout_flags(p)
    p.add_argument("--splits", help="comma list of the splits to scan (default: every split found that has masks)")
    p.add_argument("--nodata", type=cli.nodata_value, metavar="V",
                   help="prepare's --nodata, to say so in the report and the prepare command (default: each "
                        "GeoTIFF's own)")
    p.add_argument("--extra_inputs", action="append", metavar="NAME=PATTERN",
                   help="prepare's extra inputs (NAME=PATTERN or NAME=@B, repeat for several): each one's kind "
                        "(type, bands, format) and value range, and the pairs whose raster is missing, of another "
                        "size or not finite")
    p.add_argument("--palette", help=f"palette to compare against: a shipped name ({', '.join(PALETTES)}) or a "
                                     "palette JSON file (default: voc)")
    p.add_argument("--write_palette", metavar="FILE",
                   help="write the class colours found as a palette JSON for prepare --palette (local or gs://)")
    p.add_argument("--tolerance", type=cli.number(0.0, lookup.MAX_TOLERANCE, low_open=True),
                   default=lookup.DEFAULT_TOLERANCE,
                   help=f"RGB distance (0-{lookup.MAX_TOLERANCE:g}] within which a rarer colour counts as noise "
                        "around a class colour (default: %(default)s)")
    p.add_argument("--limit", type=cli.integer(1), default=None, metavar="N",
                   help="scan only the first N ids of each split: a quick look at a large dataset")
    p.add_argument("--jobs", type=cli.jobs, default=-1,
                   help="masks read in parallel (processes for local files, threads for gs://); -1 = one per core "
                        "(default: %(default)s)")
    p.add_argument("--duplicate_distance", type=cli.integer(-1, maximum=leakage.HASH_BITS),
                   default=leakage.DEFAULT_DISTANCE, metavar="BITS",
                   help=f"images in two splits whose perceptual hashes ({leakage.HASH_BITS} bits) differ in at most "
                        "this many bits are reported as near-duplicates; copies re-encoded and resized to 90%% "
                        "measured up to 42, distinct scenes 70 and more; -1 checks only ids and identical files "
                        "(default: %(default)s)")
    cli.max_pixels_flag(p, DEFAULT_MAX_PIXELS, "a tiled or stripped TIFF mask is read a band of rows at a time, "
                        "another file is reported, and an image is not hashed for near-duplicates")
    p.add_argument("--no_leakage", action="store_true",
                   help="skip the leakage checks between splits (images are then read for their headers only)")
    p.add_argument("--all", action="store_true", help="list every colour, noise included, and every leakage "
                                                      "finding")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.steady_malloc()  # one mask after another: without it, 60% of the time goes to page faults
    try:
        palette = load_palette(args.palette)
    except (OSError, PaletteError) as e:
        raise UsageError(f"--palette {args.palette}: {e}") from None
    root = args.input_dir.rstrip("/")
    spec = pairs.spec_from_args(args)
    try:
        extra_inputs = extras.parse_flags(args.extra_inputs)
        listing = layouts.find(root, spec, args.splits, args.limit)
    except pairs.LayoutError as e:
        raise UsageError(str(e)) from None
    for split, why in listing.skipped.items():
        print(f"scan: split {split} left out: {why}", file=sys.stderr)
    started = time.time()
    scans = _scan_all(root, listing, args.jobs, palette.max_index, not args.no_leakage, args.max_pixels,
                      extra_inputs)
    name = args.palette or "Pascal VOC"
    values_by_kind = values_of(scans, args.tolerance)
    lines = report(scans, listing.splits, palette, name, args.tolerance, time.time() - started, args.all,
                   values_by_kind)
    lines += geo_report(scans, args.nodata)
    lines += extras_report(scans, extra_inputs)
    if not args.no_leakage:
        images = [(s.split, s.image_id, s.fingerprint) for s in scans]
        findings = leakage.find(images, list(listing.splits), args.duplicate_distance)
        compared = sum(1 for s in scans if s.fingerprint is not None and s.fingerprint.phash is not None)
        lines += leakage.report(findings, len(scans), compared, list(listing.splits), args.duplicate_distance,
                                None if args.all else 50)
    print("\n".join(lines))
    if args.write_palette:
        written = palette_for(*values_by_kind)
        storage.write_bytes(args.write_palette, (json.dumps(written.to_json(), indent=1) + "\n").encode())
        print(f"scan: wrote {args.write_palette}: {written.num_classes} classes"
              + (f", {len(written.ignore_colors)} ignore colour" if written.ignore_colors else "")
              + f"; use it with --palette {args.write_palette}")
    if scans and all(s.image is None for s in scans):
        print(f"scan: none of the {len(scans)} masks has an image (--images {spec.images!r}): this tree holds "
              "masks only, and prepare needs each mask's image; pass the dataset's root as --input_dir, or the "
              "images' place as --images", file=sys.stderr)
        return 1
    command, notes = prepare_command(root, spec, listing, args.write_palette or args.palette, scans, values_by_kind,
                                     args.splits, extra_inputs, args.nodata)
    print("prepare this tree with:\n  " + command)
    for note in notes:
        print(f"  ({note})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main("scan", run, argv)


if __name__ == "__main__":
    sys.exit(main())
