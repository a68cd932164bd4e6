"""A contact sheet of crops and masks: see the data before training on it.

    python -m segprep.inspect data/records --output sheet.png
    python -m segprep.inspect gs://B/records --split val --count 24 --seed 3 --output gs://B/sheet.png
    python -m segprep.inspect data/sample_voc --output pairs.png      # a VOC root: image–mask alignment
    python -m segprep.inspect ~/cityscapes --palette cityscapes --output pairs.png \
        --images 'leftImg8bit/{split}/*/{id}_leftImg8bit.png' --masks 'gtFine/{split}/*/{id}_gtFine_labelIds.png'

For prepare's output: `--count` crops of `--split` drawn at random (`--seed`) from its shards, each as image,
mask in the palette's colours, and the two overlaid, with the source id and the crop's offset under it; a legend
of class names and colours; and a bar chart of pixels per class from metadata.json. For a dataset root (any folder
without a metadata.json, read with prepare's layout flags --images, --masks, ...; VOC's by default): whole
image–mask pairs of the split, scaled to fit, to check that masks line up with their images before a long run;
off-palette mask colours are drawn in the ignore colour.
"""

from __future__ import annotations

import dataclasses
import sys

import cv2
import numpy as np

from segprep import codec, layout, layouts, pairs, storage
from segprep.formats.metadata import metadata_path
from segprep.formats import records, shards
from segprep.convert import DEFAULT_MAX_PIXELS, ConvertConfig, InputError, decode_pair
from segprep.formats import metadata as md
from segprep.palette import IGNORE_LABEL, Palette, PaletteError, load_palette
from segprep import cli
from segprep.cli import Parser, UsageError, examples

PANEL = 192  # the longest side of a panel, in pixels
GAP = 8
CAPTION = 18
PER_ROW = 2  # samples per row; each is three panels
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, INK, PAPER = (255, 255, 255), (30, 30, 30), (248, 248, 248)


@dataclasses.dataclass
class Sample:
    image: np.ndarray  # (h, w, 3) RGB
    classes: np.ndarray  # (h, w) uint8
    caption: str


def _fit(image: np.ndarray, classes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Scaled to fit a side × side panel: the image by area, the mask nearest (never blended)."""
    h, w = classes.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return image, classes
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(classes, size, interpolation=cv2.INTER_NEAREST))


def panel_origins(count: int, side: int, top: int) -> list[tuple[int, int]]:
    """(x, y) of each sample's first panel; its mask and overlay panels follow at + side + GAP."""
    origins = []
    for i in range(count):
        row, col = divmod(i, PER_ROW)
        origins.append((GAP + col * (3 * (side + GAP) + GAP), top + row * (side + CAPTION + GAP)))
    return origins


def render(samples: list[Sample], palette: Palette, title: str, pixels: dict[str, tuple[int, tuple]]) -> np.ndarray:
    """The sheet: title, samples (image | mask | overlay, caption), legend, bar chart. → (H, W, 3) uint8 RGB."""
    side = min(PANEL, max([max(s.classes.shape) for s in samples], default=PANEL))
    colors = palette.color_array()
    cols = min(PER_ROW, max(1, len(samples)))
    width = max(GAP + cols * (3 * (side + GAP) + GAP), 640)
    rows = -(-len(samples) // PER_ROW)
    top = 30
    legend_top = top + rows * (side + CAPTION + GAP) + GAP
    legend_rows = -(-len(pixels) // 4)
    chart_top = legend_top + legend_rows * 20 + 16
    height = chart_top + len(pixels) * 18 + 24
    sheet = np.full((height, width, 3), PAPER, np.uint8)
    cv2.putText(sheet, title, (GAP, 20), FONT, 0.5, INK, 1, cv2.LINE_AA)
    for sample, (x, y) in zip(samples, panel_origins(len(samples), side, top)):
        image, classes = _fit(sample.image, sample.classes, side)
        mask = colors[classes]
        overlay = cv2.addWeighted(image, 0.5, mask, 0.5, 0.0)
        h, w = classes.shape
        for i, part in enumerate((image, mask, overlay)):
            px = x + i * (side + GAP)
            sheet[y:y + h, px:px + w] = part
        cv2.putText(sheet, sample.caption[:60], (x, y + side + 13), FONT, 0.4, INK, 1, cv2.LINE_AA)
    for i, (name, (_, color)) in enumerate(pixels.items()):  # legend: swatch and name, four a row
        x, y = GAP + (i % 4) * (width // 4), legend_top + (i // 4) * 20
        cv2.rectangle(sheet, (x, y), (x + 14, y + 14), tuple(int(c) for c in color), -1)
        cv2.rectangle(sheet, (x, y), (x + 14, y + 14), INK, 1)
        cv2.putText(sheet, name[:24], (x + 20, y + 12), FONT, 0.4, INK, 1, cv2.LINE_AA)
    total = max(1, sum(n for n, _ in pixels.values()))
    cv2.putText(sheet, "pixels per class", (GAP, chart_top - 4), FONT, 0.45, INK, 1, cv2.LINE_AA)
    bar_x, bar_w = GAP + 150, width - GAP - 150 - 70
    for i, (name, (n, color)) in enumerate(pixels.items()):
        y = chart_top + 4 + i * 18
        cv2.putText(sheet, name[:20], (GAP, y + 11), FONT, 0.4, INK, 1, cv2.LINE_AA)
        cv2.rectangle(sheet, (bar_x, y), (bar_x + max(1, round(bar_w * n / total)), y + 12),
                      tuple(int(c) for c in color), -1)
        cv2.rectangle(sheet, (bar_x, y), (bar_x + bar_w, y + 12), INK, 1)
        cv2.putText(sheet, f"{100 * n / total:.1f}%", (bar_x + bar_w + 6, y + 11), FONT, 0.4, INK, 1, cv2.LINE_AA)
    return sheet


def _class_pixels(palette: Palette, counts: np.ndarray) -> dict[str, tuple[int, tuple]]:
    """{name: (pixels, colour)} of the classes with pixels, and 'ignore' (255) when any."""
    colors = palette.color_array()
    out = {palette.names[c]: (int(counts[c]), tuple(colors[c])) for c in range(palette.num_classes) if counts[c]}
    if counts[IGNORE_LABEL]:
        out["ignore (255)"] = (int(counts[IGNORE_LABEL]), tuple(colors[IGNORE_LABEL]))
    return out


def from_records(out: str, split: str | None, count: int, seed: int):
    """Samples, palette, title and pixel counts for a prepare output dir."""
    try:
        meta = md.parse(storage.read_bytes(metadata_path(out)), metadata_path(out))
    except OSError:
        raise UsageError(f"{out} holds no metadata.json: pass prepare's --output_dir or a VOC root.") from None
    except md.MetadataError as e:
        raise UsageError(str(e)) from None
    split = split or next((name for name, s in meta.splits.items() if s.random_crops), next(iter(meta.splits)))
    try:
        entry = meta.split(split)
    except md.MetadataError as e:
        raise UsageError(str(e)) from None
    rng = np.random.default_rng(seed)
    paths = [layout.join(out, n) for n, k in zip(entry.shards, entry.shard_records) if k]
    rng.shuffle(paths)
    pool, budget = [], max(400, 20 * count)  # a seeded reservoir over the first `budget` records read
    seen = 0
    for path in paths:
        for _, data in shards.read(path, check=False):
            if len(pool) < count:
                pool.append(data)
            else:
                j = int(rng.integers(0, seen + 1))
                if j < count:
                    pool[j] = data
            seen += 1
            if seen >= budget:
                break
        if seen >= budget:
            break
    samples = []
    for data in pool:
        f = records.decode_example(data)
        y, x = f[records.CROP_OFFSET][1]
        samples.append(Sample(codec.decode_image(f[records.IMAGE_ENCODED][1][0]),
                              codec.decode_mask(f[records.MASK_ENCODED][1][0])[0],
                              f"{f[records.IMAGE_SOURCE_ID][1][0].decode()} @ y={y}, x={x}"))
    palette = meta.palette
    counts = np.zeros(256, np.int64)
    counts[:palette.num_classes] = entry.class_pixels or 0
    counts[IGNORE_LABEL] = entry.ignore_pixels
    title = (f"{out}  split {split}: {entry.records:,} crops of {meta.crop_size} px; {len(samples)} at random "
             f"(seed {seed})")
    return samples, palette, title, _class_pixels(palette, counts)


def from_dataset(root: str, spec: pairs.LayoutSpec, split: str | None, count: int, seed: int, palette: Palette,
                 bands=None, value_range=None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Samples, title and pixel counts for a dataset root: whole pairs, masks through the palette."""
    try:
        listing = layouts.find(root, spec, split, seed=seed)
    except pairs.LayoutError as e:
        raise UsageError(f"{root} holds no metadata.json (prepare's output), and as a dataset root: {e}") from None
    split = split or next((s for s in listing.splits if pairs.is_training(s)), listing.splits[0])
    every = listing.pairs(split)
    listed = [p for p in every if not p.reason]
    rng = np.random.default_rng(seed)
    chosen = [listed[i] for i in sorted(rng.choice(len(listed), min(count, len(listed)), replace=False))]
    samples, counts, problems = [], np.zeros(256, np.int64), len(every) - len(listed)
    config = ConvertConfig(palette=palette, unknown_colors="ignore", bands=bands, image_range=value_range,
                           max_pixels=max_pixels)
    for pair in chosen:
        try:  # prepare's own decode and checks, off-palette colours drawn as ignore
            for path in (pair.image, pair.mask):
                why = pairs.outside_root(root, layout.join(root, path))
                if why:
                    raise InputError("outside_root", why)
            image, classes, _ = decode_pair(storage.read_bytes(layout.join(root, pair.image)),
                                            storage.read_bytes(layout.join(root, pair.mask)), config)
        except (InputError, OSError) as e:
            print(f"inspect: {pair.image_id}: {e}", file=sys.stderr)
            problems += 1
            continue
        counts += np.bincount(classes.ravel(), minlength=256)
        samples.append(Sample(image, classes, f"{pair.image_id} ({image.shape[1]}×{image.shape[0]})"))
    title = f"{root}  split {split}: {len(listed):,} pairs; {len(samples)} at random (seed {seed})"
    return samples, title, _class_pixels(palette, counts), problems


def build_parser() -> Parser:
    p = Parser("inspect", prog="python -m segprep.inspect", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("source", help="prepare's --output_dir, or a dataset root (local or gs://)")
    p.add_argument("--output", default="sheet.png",
                   help="the picture to write, local or gs://: PNG, or JPEG for a .jpg name (default: %(default)s)")
    p.add_argument("--split", help="which split to draw from (default: the training split)")
    p.add_argument("--count", type=cli.integer(1, maximum=200), default=12,
                   help="how many crops or image–mask pairs to draw, 1-200 (default: %(default)s)")
    p.add_argument("--seed", type=cli.integer(0), default=0,
                   help="which random crops or pairs: another seed, another draw (default: %(default)s)")
    p.add_argument("--palette", help="for a dataset root: the palette to read and colour the masks with, a shipped "
                                     "name or a JSON file (default: voc)")
    cli.layout_flags(p)
    p.add_argument("--bands", type=cli.bands, metavar="B,B,B", help="for a dataset root: as prepare's --bands")
    p.add_argument("--image_range", type=cli.value_range, metavar="LO,HI", help="for a dataset root: as prepare's "
                                                                       "--image_range")
    cli.max_pixels_flag(p, DEFAULT_MAX_PIXELS, "for a dataset root, the pair is named and skipped")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.output.lower().endswith((".png", ".jpg", ".jpeg")):
        raise UsageError(f"--output {args.output}: the sheet is written as PNG or JPEG: name it .png, .jpg or .jpeg.")
    source = args.source.rstrip("/")
    problems = 0
    if not storage.exists(metadata_path(source)):
        try:
            palette = load_palette(args.palette)
        except (OSError, PaletteError) as e:
            raise UsageError(f"--palette {args.palette}: {e}") from None
        samples, title, pixels, problems = from_dataset(source, pairs.spec_from_args(args), args.split, args.count,
                                                        args.seed, palette, args.bands, args.image_range,
                                                        args.max_pixels)
    else:
        samples, palette, title, pixels = from_records(source, args.split, args.count, args.seed)
    if not samples:
        raise UsageError(f"{source}: nothing to show in that split.")
    sheet = render(samples, palette, title, pixels)
    fmt = "jpeg" if args.output.lower().endswith((".jpg", ".jpeg")) else "png"
    storage.write_bytes(args.output, codec.encode_image(sheet, fmt, 90))
    print(f"inspect: {len(samples)} samples, {len(pixels)} classes in the legend → {args.output} "
          f"({sheet.shape[1]}×{sheet.shape[0]})")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    return cli.main("inspect", run, argv)


if __name__ == "__main__":
    sys.exit(main())
