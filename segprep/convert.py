"""One source pair (image + mask bytes) → crop records and the statistics metadata.json reports.

This is everything the prepare pipeline does to one image, as a plain function: decode, check the pair, convert
the mask to class indices, choose windows (random crops for training splits, covering tiles for the others), cut
image and mask alike, encode. Beam only wraps it (`pipelines/transforms.py`). A JPEG's or PNG's pixels stay in
OpenCV's BGR from the decoder to the encoder, which takes BGR, so they are never swapped; statistics are RGB.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import cv2
import numpy as np

from segprep import codec, crops, extras, geo, headers, lookup
from segprep.palette import IGNORE_LABEL, VOC, Palette
from segprep.formats.metadata import BandStats, Stats
from segprep.formats.records import CropRecord, ExtraCrop


class InputError(ValueError):
    """An input pair that cannot be used; `reason` is a short machine-readable code for the error record."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# Tiled and stripped TIFFs larger than one window a side are read and cut window by window (segprep/tiles.py):
# a window of 4096² plus a crop's margin takes about 110 MB to read, convert and cut, whatever the tile's size.
DEFAULT_WINDOW_SIZE = 4096

# The most pixels an image may have to be decoded: about 2 GB of memory at the ~11 bytes a pixel that decoding,
# the mask and its conversion take (a 10,000² tile peaks at 1.07 GB); Pillow's decompression-bomb limit too.
DEFAULT_MAX_PIXELS = 178_956_970


EXIF_MODES = ("auto", "apply", "ignore")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    crop_size: int = 256
    crops_per_image: int | None = None  # None: auto, about one pass over the image's area
    seed: int = 0
    palette: Palette = VOC
    unknown_colors: str = "error"
    color_tolerance: float = lookup.DEFAULT_TOLERANCE
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    cat_max_ratio: float = 1.0
    bands: tuple[int, ...] | None = None  # 1-based bands to keep, in order (None: 1 or 3 bands as stored)
    image_range: tuple[float, float] | None = None  # values mapped onto 0..255 (None: 8-bit images only)
    max_pixels: int = DEFAULT_MAX_PIXELS  # a larger image (by its header) is an error record, never decoded
    window_size: int = DEFAULT_WINDOW_SIZE  # tiled/stripped TIFFs wider or taller than this are read window by window
    oversample_fraction: float = 0.0  # share of random crops centred on a pixel of a named class the image holds
    oversample_classes: tuple[int, ...] | None = None  # the named classes (None: every class but class 0)
    extra_inputs: tuple = ()  # segprep.extras.ExtraInput each: rasters cut at the image's crop windows
    exif: str = "auto"  # a JPEG's or PNG's EXIF orientation: auto (by which way the mask fits), apply, ignore
    nodata: float | None = None  # the images' nodata value (--nodata); None: each TIFF's own GDAL_NODATA, if any
    max_nodata: float = 0.5  # a random crop with a larger share of no-data pixels is drawn again
    split_blocks: int | None = None  # --split_by blocks:SIZE: each image's val blocks (segprep/blocks.py)
    split_fraction: float = 0.0  # their share of its blocks that hold data (--val_fraction)

    def __post_init__(self) -> None:
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be positive. Received: {self.crop_size}")
        if self.crops_per_image is not None and self.crops_per_image < 1:
            raise ValueError(f"crops_per_image must be a positive number or 'auto'. Received: {self.crops_per_image}")
        if self.unknown_colors not in lookup.UNKNOWN_MODES:
            raise ValueError(f"unknown_colors must be one of {', '.join(lookup.UNKNOWN_MODES)}. "
                             f"Received: {self.unknown_colors!r}")
        if self.unknown_colors == "nearest":
            lookup.check_nearest_palette(self.palette)
        if not 0 < self.color_tolerance <= lookup.MAX_TOLERANCE:
            raise ValueError(f"color_tolerance must be in (0, {lookup.MAX_TOLERANCE:g}]. Received: "
                             f"{self.color_tolerance}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100. Received: {self.jpeg_quality}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png'. Received: {self.image_format!r}")
        if not 0.0 < self.cat_max_ratio <= 1.0:
            raise ValueError(f"cat_max_ratio must be in (0, 1]. Received: {self.cat_max_ratio}")
        if self.bands is not None and (len(self.bands) not in (1, 3) or min(self.bands) < 1):
            raise ValueError(f"bands must be 1 or 3 band numbers from 1 (records hold grey or RGB). Received: "
                             f"{','.join(map(str, self.bands))}")
        if self.image_range is not None and not self.image_range[0] < self.image_range[1]:
            raise ValueError(f"image_range must be LO,HI with LO < HI. Received: {self.image_range}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive. Received: {self.max_pixels}")
        if not 0.0 <= self.oversample_fraction <= 1.0:
            raise ValueError(f"oversample_fraction must be in [0, 1]. Received: {self.oversample_fraction}")
        if self.oversample_classes is not None:
            bad = [c for c in self.oversample_classes if not 0 <= c < self.palette.num_classes]
            if bad or not self.oversample_classes:
                raise ValueError(f"oversample_classes must name classes 0..{self.palette.num_classes - 1}. "
                                 f"Received: {','.join(map(str, self.oversample_classes))}")
        if self.split_blocks is not None:
            if self.split_blocks % self.crop_size:
                raise ValueError(f"--split_by blocks:{self.split_blocks}: the block size must be a multiple of "
                                 f"--crop_size {self.crop_size}, so that val tiles never leave their block")
            if self.oversample_fraction:
                raise ValueError("--split_by blocks and --oversample_fraction do not go together yet: choose one")
            if not 0.0 < self.split_fraction < 1.0:
                raise ValueError(f"--split_by blocks needs --val_fraction in (0, 1). Received: {self.split_fraction}")
        if not 0.0 <= self.max_nodata <= 1.0:
            raise ValueError(f"max_nodata must be in [0, 1]. Received: {self.max_nodata}")
        if self.exif not in EXIF_MODES:
            raise ValueError(f"exif must be one of {', '.join(EXIF_MODES)}. Received: {self.exif!r}")
        if self.window_size < self.crop_size:
            raise ValueError(f"window_size must be at least crop_size ({self.crop_size}). Received: "
                             f"{self.window_size}")


@dataclasses.dataclass
class Source:
    """One pair, decoded and checked: the image (RGB, or BGR as the decoder gives it and the encoder takes it), its
    class map, its extra inputs' rasters {name: (H, W, C)} and the source's stats."""

    image: np.ndarray
    classes: np.ndarray
    stats: Stats
    extras: dict = dataclasses.field(default_factory=dict)
    nodata: dict = dataclasses.field(default_factory=dict)  # extra input name → the nodata value it declares
    grid: geo.Grid | None = None  # where a georeferenced source lies (segprep/geo.py)
    empty: np.ndarray | None = None  # (H, W) bool: the image's no-data pixels (None when it declares no nodata)


def decode_pair(image_bytes: bytes, mask_bytes: bytes, config: ConvertConfig,
                bgr: bool = False) -> tuple[np.ndarray, np.ndarray, Stats]:
    """→ (image, class-index mask, the source's stats), as `decode_source` without extra inputs."""
    source = decode_source(image_bytes, mask_bytes, config, bgr)
    return source.image, source.classes, source.stats


def decode_source(image_bytes: bytes, mask_bytes: bytes, config: ConvertConfig, bgr: bool = False,
                  extra_bytes: dict[str, bytes] | None = None) -> Source:
    """Decodes and checks one pair and its extra inputs (`extra_bytes`: {name: file bytes} of those read by
    pattern; bands of the image are taken from `image_bytes`): the source's stats count one image, its pixels,
    off-palette pixels ignored or snapped. Raises `InputError` naming what is wrong. Sizes come from the headers
    first: a pair whose sizes differ, or an image above `config.max_pixels`, is refused before a pixel is
    decoded."""
    orientation = check_headers(image_bytes, mask_bytes, config)
    try:
        image = codec.decode_image(image_bytes, config.bands, config.image_range, bgr=bgr)
    except codec.DecodeError as e:
        raise InputError(e.reason or "bad_image", f"image: {e}") from None
    stored = image.shape[:2]
    if orientation > 1:
        image = codec.orient(image, orientation)
    try:
        mask, _ = codec.decode_mask(mask_bytes, config.palette.max_index, bgr=bgr)
    except codec.DecodeError as e:
        raise InputError(e.reason or "bad_mask", f"mask: {e}") from None
    check_sizes(image.shape[1::-1], mask.shape[1::-1])
    grid = check_grids(image_bytes, mask_bytes, extra_bytes or {})
    rasters, nodata = decode_extras(image_bytes, extra_bytes or {}, config, stored, orientation)
    conversion = convert_classes(mask, config, bgr=bgr)
    empty = image_no_data(image_bytes, image, config, orientation)
    stats = Stats(images=1, source_pixels=int(conversion.classes.size), binary_masks=int(conversion.binary),
                  source_ignore_pixels=conversion.ignore_pixels, exif_applied=int(orientation > 1),
                  exif_as_stored=int(orientation < 0))
    if empty is not None:
        stats.nodata_pixels = int(np.count_nonzero(empty))
        if stats.nodata_pixels:
            conversion.classes[empty] = IGNORE_LABEL  # no imagery: nothing to learn there, whatever the mask says
    if config.unknown_colors == "nearest":
        stats.unknown_pixels_snapped = conversion.unknown_pixels
    else:
        stats.unknown_pixels_ignored = conversion.unknown_pixels
    return Source(image, conversion.classes, stats, rasters, nodata, grid, empty)


def decode_extras(image_bytes: bytes, extra_bytes: dict[str, bytes], config: ConvertConfig,
                  stored: tuple[int, int], orientation: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({name: (H, W, C) raster at its own depth}, {name: the nodata value its file declares}) of the config's
    extra inputs: each the image's stored size (`stored`: (height, width)), turned as the image was
    (`orientation`), finite (or NaN where NaN is its nodata value). Raises `InputError` ("bad_extra",
    "size_mismatch") naming the input."""
    out: dict[str, np.ndarray] = {}
    nodata: dict[str, float] = {}
    image_raster = None
    for extra in config.extra_inputs:
        try:
            if extra.bands:
                if image_raster is None:
                    image_raster = extras.decode(image_bytes, "image")
                raster = extras.bands_of(image_raster, extra)
                declared = codec.raster_nodata(image_bytes)
            else:
                raster = extras.decode(extra_bytes[extra.name], f"extra input {extra.name}")
                declared = codec.raster_nodata(extra_bytes[extra.name])
            if raster.shape[:2] != tuple(stored):
                raise InputError("size_mismatch", f"extra input {extra.name} is {raster.shape[1]}×{raster.shape[0]} "
                                                  f"(w×h) but its image is {stored[1]}×{stored[0]}; they must be "
                                                  "the same size")
            extras.check_finite(raster, extra.name, declared)
        except codec.DecodeError as e:
            message = str(e) if str(e).startswith("extra input") else f"extra input {extra.name}: {e}"
            raise InputError("bad_extra", message) from None
        out[extra.name] = codec.orient(raster, orientation) if orientation > 1 else raster
        if declared is not None:
            nodata[extra.name] = declared
    return out, nodata


def image_nodata(image_bytes: bytes, config: ConvertConfig) -> float | None:
    """The images' nodata value: --nodata, else the image file's own (a TIFF's GDAL_NODATA), else None."""
    return config.nodata if config.nodata is not None else codec.raster_nodata(image_bytes)


def empty_pixels(samples: np.ndarray, value: float) -> np.ndarray:
    """(H, W) bool: the pixels whose every band equals the nodata `value` (NaN where it is NaN)."""
    if samples.ndim == 2:
        samples = samples[..., None]
    out = None
    for b in range(samples.shape[2]):  # band by band: several times faster than .all(axis=2) over a short axis
        band = samples[..., b]
        if value != value:
            hit = np.isnan(band) if band.dtype.kind == "f" else np.zeros(band.shape, bool)
        else:
            hit = band == value
        out = hit if out is None else np.logical_and(out, hit, out=out)
    return out


def image_no_data(image_bytes: bytes, image: np.ndarray, config: ConvertConfig,
                  orientation: int = 1) -> np.ndarray | None:
    """(H, W) bool of the no-data pixels of `image` (decoded, and turned by its EXIF `orientation`), or None when
    no nodata value is declared: pixels whose every band of the file equals it. An 8-bit image read as it is
    compares its decoded bands; one whose bands or range prepare changes is compared as stored."""
    value = image_nodata(image_bytes, config)
    if value is None:
        return None
    if config.bands is None and config.image_range is None and image.dtype == np.uint8:
        return empty_pixels(image, value)
    empty = empty_pixels(codec.decode_raster(image_bytes), value)
    return codec.orient(empty, orientation) if orientation > 1 else empty


def check_grids(image: bytes | geo.Grid | None, mask: bytes | geo.Grid | None,
                extras: dict | None = None) -> geo.Grid | None:
    """The grid of a pair (its image's, or its mask's when only the mask is georeferenced): a GeoTIFF image, mask
    or extra input on another grid than the others (another CRS, origin or pixel size) is an `InputError`
    ("grid_mismatch") naming both grids, never a silent misalignment. Files without georeferencing fit any grid."""
    def grid_of(source):
        return source if source is None or isinstance(source, geo.Grid) else geo.read(source)

    grids = [("image", grid_of(image)), ("mask", grid_of(mask))]
    grids += [(f"extra input {name}", grid_of(data)) for name, data in (extras or {}).items()]
    found = [(what, grid) for what, grid in grids if grid is not None]
    for what, grid in found[1:]:
        if not geo.same_grid(found[0][1], grid):
            raise InputError("grid_mismatch", f"{found[0][0]} and {what} lie on different grids: "
                                              f"{found[0][1].describe()} against {grid.describe()}; reproject one "
                                              "onto the other's grid (gdalwarp -tr/-te or rio warp --like)")
    return found[0][1] if found else None


def convert_classes(mask: np.ndarray, config: ConvertConfig, mode: str | None = None,
                    bgr: bool = False) -> lookup.Conversion:
    """A decoded mask (colours, BGR with `bgr`, or indices) → class indices by the palette, under `mode` (default:
    the config's --unknown_colors); raises `InputError`."""
    shared = config.palette.shared_color
    if mask.ndim == 3 and shared:
        raise InputError("unknown_colors", f"mask: a colour mask, but the palette gives {shared[0]} to both "
                                           f"{shared[1]!r} and {shared[2]!r}: it reads index masks only (through "
                                           "its index_map); pass a palette with one colour a class")
    try:
        return lookup.convert_mask(mask, config.palette, mode or config.unknown_colors, config.color_tolerance,
                                   bgr=bgr)
    except lookup.UnknownColorsError as e:
        raise InputError("unknown_colors", f"mask: {e}") from None


def _header(data: bytes) -> headers.ImageInfo | None:
    """What the file's header says, or None when it cannot be read as one (the decoder then names the fault)."""
    try:
        return headers.probe(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any unreadable header: decoding reports it as it always has
        return None


def check_headers(image_bytes: bytes, mask_bytes: bytes, config: ConvertConfig) -> int:
    """Refuses, from the headers alone, an image above `config.max_pixels` (a file may declare 50,000² px in a few
    MB: decoding it would take 7.5 GB) and a pair whose sizes differ; raises `InputError`. → the EXIF orientation
    to apply to the image (see `exif_orientation`): > 1 to apply, -1 for one read as stored, 1 for none."""
    image, mask = _header(image_bytes), _header(mask_bytes)
    for what, info in (("image", image), ("mask", mask)):
        why = info and too_large(info.width, info.height, config.max_pixels,
                                 "convert image and mask to tiled TIFFs, which are read window by window")
        if why:
            raise InputError("too_large", f"{what}: {why}")
    if image is None or mask is None:
        return 1
    return exif_orientation(image_bytes, (image.width, image.height), (mask.width, mask.height), config.exif)


def exif_orientation(image_bytes: bytes, image: tuple[int, int], mask: tuple[int, int], mode: str) -> int:
    """Whether to turn the image as its EXIF orientation says (what every viewer and most annotation tools show),
    by --exif `mode`: "apply" or "ignore", or "auto": the way its mask fits, by size. A mask that fits both ways
    (orientations 2-4, or a square image) is an error record ("exif_ambiguous") naming the orientation, and one
    that fits neither a "size_mismatch" that says both. → the orientation to apply (> 1), -1 when an orientation
    is there and the image is read as stored, 1 when there is none; raises `InputError`."""
    orientation = headers.exif_orientation(image_bytes)
    if orientation == 1:
        check_sizes(image, mask)
        return 1
    turned = (image[1], image[0]) if orientation >= 5 else image
    how = f"EXIF orientation {orientation} ({headers.EXIF_ROTATION[orientation]} for display)"
    stored, displayed = tuple(mask) == tuple(image), tuple(mask) == turned
    if mode == "auto" and stored and displayed:
        raise InputError("exif_ambiguous", f"image has {how}, and its mask fits it both as stored and as displayed: "
                                           "pass --exif apply if the masks were drawn on the photos as viewers show "
                                           "them (most annotation tools), or --exif ignore if on the stored pixels")
    if mode == "apply" or (mode == "auto" and displayed):
        if not displayed:
            raise InputError("size_mismatch", f"mask is {mask[0]}×{mask[1]} (w×h) but its image, with its {how} "
                                              f"applied (--exif apply), is {turned[0]}×{turned[1]}"
                                              + ("; as stored it fits: pass --exif ignore" if stored else ""))
        return orientation
    if not stored:
        raise InputError("size_mismatch", f"mask is {mask[0]}×{mask[1]} (w×h) but its image is {image[0]}×{image[1]} "
                                          f"as stored" + (f" and {turned[0]}×{turned[1]} as displayed ({how})"
                                                          if mode == "auto" else
                                                          f" (--exif ignore); with its {how} applied it fits: pass "
                                                          "--exif apply" if displayed else f"; it has {how}"))
    return -1


def too_large(width: int, height: int, max_pixels: int, remedy: str) -> str | None:
    """Why an image whose header says `width` × `height` is not decoded whole (`max_pixels`, every command's
    --max_pixels), or None when it may be; `remedy` is the way out besides a larger limit."""
    if width * height <= max_pixels:
        return None
    return (f"its header says {width}×{height} (w×h) = {width * height:,} px, above --max_pixels {max_pixels:,} "
            f"(about 11 bytes a pixel to decode whole); raise --max_pixels if there is the memory, or {remedy}")


def check_sizes(image: tuple[int, int], mask: tuple[int, int]) -> None:
    """Raises `InputError` "size_mismatch" unless image and mask, each (width, height), are the same size."""
    if tuple(image) != tuple(mask):
        raise InputError("size_mismatch", f"mask is {mask[0]}×{mask[1]} (w×h) but its image is "
                                          f"{image[0]}×{image[1]}; they must be the same size")


def oversampled_classes(config: ConvertConfig) -> tuple[int, ...]:
    """The classes --oversample_fraction centres crops on: --oversample_classes, or every class but class 0."""
    if config.oversample_classes is not None:
        return config.oversample_classes
    return tuple(range(1, config.palette.num_classes))


def class_positions(config: ConvertConfig, image_id: str, width: int, count: int) -> crops.ClassPositions | None:
    """An empty sample of the named classes' pixels for an image of `count` random crops; None without
    --oversample_fraction."""
    if not config.oversample_fraction:
        return None
    return crops.ClassPositions(config.seed, image_id, width, oversampled_classes(config),
                                crops.position_limit(config.oversample_fraction, count))


def crop_boxes(classes: np.ndarray, image_id: str, config: ConvertConfig, training: bool,
               empty: np.ndarray | None = None, tally: Stats | None = None) -> list[crops.CropBox]:
    """The windows of one source: covering tiles, or random crops (each drawn again while one class dominates it,
    --cat_max_ratio, or while more than --max_nodata of it holds no data: `empty`, padding included). `tally`
    counts the draws rejected for no data."""
    height, width = classes.shape
    size = config.crop_size
    if not training:
        return crops.tile_crops(height, width, size)
    count = config.crops_per_image or crops.auto_crop_count(height, width, size)
    positions = class_positions(config, image_id, width, count)
    if positions is not None:
        positions.add(classes)
    draws = crops.CropDraws(height, width, size, config.seed, image_id, config.oversample_fraction, positions)
    rejected = redraw_rule(config, lambda box: crops.cut(classes, box, IGNORE_LABEL),
                           None if empty is None else lambda box: nodata_share(empty, box), tally)
    return [crops.pick(draws.draws(k), rejected) for k in range(count)]


def nodata_share(empty: np.ndarray, box: crops.CropBox, origin: tuple[int, int] = (0, 0)) -> float:
    """The share of a window's pixels that hold no data: `empty` (the no-data pixels of a region of the source
    from `origin` on, holding the window's part of the source), and the padding past the source's edge."""
    y, x = box.y - origin[0], box.x - origin[1]
    part = empty[y:y + box.height, x:x + box.width]
    return (int(np.count_nonzero(part)) + box.height * box.width - part.size) / (box.height * box.width)


def redraw_rule(config: ConvertConfig, mask_of, share_of, tally: Stats | None = None):
    """`crops.pick`'s test of a random window (None when nothing is tested): dominated by one class (with
    --cat_max_ratio < 1; `mask_of(box)` gives its class map), or holding more than --max_nodata no data (for an
    image that declares a nodata value; `share_of(box)` gives the share). The same rule on the whole-image and
    window-by-window paths, so both draw the same crops."""
    if share_of is None and config.cat_max_ratio >= 1.0:
        return None

    def rejected(box) -> bool:
        if share_of is not None and share_of(box) > config.max_nodata:
            if tally is not None:
                tally.nodata_redraws += 1
            return True
        return config.cat_max_ratio < 1.0 and crops.is_dominated(mask_of(box), config.cat_max_ratio)

    return rejected


def encode_crop(image_id: str, box: crops.CropBox, image: np.ndarray, classes: np.ndarray,
                origin: tuple[int, int], source: tuple[int, int], config: ConvertConfig,
                bgr: bool = False, rasters: dict[str, np.ndarray] | None = None,
                nodata: dict[str, float] | None = None, grid: geo.Grid | None = None) -> tuple[CropRecord, Stats]:
    """One window `box` (in source coordinates) cut from `image` (RGB, or BGR with `bgr`), `classes` and the extra
    inputs' `rasters`, arrays of the source from `origin` (y, x) on, whose bottom and right edges are the source's
    wherever the window runs past them → (record, the crop's stats). `source` is the source's (height, width). An
    extra input's crop is padded with 0 past an edge, as the image's, or with the nodata value its raster declares
    (`nodata`: {name: value}), whose pixels its statistics leave out. A georeferenced source's `grid` gives the
    record the crop's own transform (the source's shifted by the crop's offset) and CRS."""
    local = crops.CropBox(box.y - origin[0], box.x - origin[1], box.height, box.width)
    cut_extras, extra_stats = [], {}
    for name, raster in (rasters or {}).items():
        declared = (nodata or {}).get(name)
        cut_extras.append((name, ExtraCrop.of(crops.cut(raster, local, extras.pad_value(raster, declared)))))
        extra_stats[name] = BandStats.of(raster[local.y:local.y + local.height, local.x:local.x + local.width],
                                         declared)
    image_crop = crops.cut(image, local, 0)
    mask_crop = crops.cut(classes, local, IGNORE_LABEL)
    valid = image[local.y:local.y + local.height, local.x:local.x + local.width]  # a view: padding excluded
    n = valid.shape[0] * valid.shape[1]
    mean, std = cv2.meanStdDev(valid)  # one pass in C++, float64 sums: no per-crop copies or int64 einsum
    mean, std = mean.ravel(), std.ravel()
    if bgr:
        mean, std = mean[::-1], std[::-1]
    class_pixels = np.bincount(mask_crop.ravel(), minlength=256).astype(np.int64)
    held = class_pixels > 0
    held[IGNORE_LABEL] = False
    stats = Stats(crops=1, rgb_pixels=n, class_pixels=class_pixels, class_crops=held.astype(np.int64),
                  rgb_sum=mean * n, rgb_sq_sum=(std * std + mean * mean) * n, extras=extra_stats)
    return CropRecord(
        source_id=image_id,
        image=codec.encode_image(image_crop, config.image_format, config.jpeg_quality, bgr=bgr),
        image_format=config.image_format,
        mask_png=codec.encode_index_png(mask_crop),
        height=box.height, width=box.width, offset=(box.y, box.x),
        source_height=source[0], source_width=source[1], present=tuple(np.flatnonzero(held).tolist()),
        extras=tuple(cut_extras),
        geo=None if grid is None else (grid.crs, geo.pack(grid.shifted(box.y, box.x)))), stats


def encode_crops(image_id: str, image: np.ndarray, classes: np.ndarray, config: ConvertConfig,
                 training: bool, bgr: bool = False,
                 rasters: dict[str, np.ndarray] | None = None, nodata: dict[str, float] | None = None,
                 grid: geo.Grid | None = None,
                 empty: np.ndarray | None = None) -> Iterator[tuple[int, CropRecord | None, Stats]]:
    """Cut and encode every window of one decoded pair (its image RGB, or BGR with `bgr`, and its extra inputs'
    `rasters`; `empty`, its no-data pixels): yields (crop number, record, that crop's stats), and (k, None, stats)
    for what is counted without a record: a tile that holds no data at all (skipped), the draws rejected for no
    data."""
    tally = Stats()
    for k, box in enumerate(crop_boxes(classes, image_id, config, training, empty, tally)):
        if not training and empty is not None and tile_is_empty(empty, box):
            yield k, None, Stats(nodata_tiles_skipped=1)
            continue
        record, stats = encode_crop(image_id, box, image, classes, (0, 0), classes.shape, config, bgr, rasters,
                                    nodata, grid)
        yield k, record, stats
    if tally.nodata_redraws:
        yield -1, None, tally


def block_crops(image_id: str, image: np.ndarray, classes: np.ndarray, config: ConvertConfig, bgr: bool = False,
                rasters: dict | None = None, nodata: dict | None = None, grid: geo.Grid | None = None,
                empty: np.ndarray | None = None) -> Iterator[tuple[str, int, CropRecord | None, Stats]]:
    """--split_by blocks: one image's training crops (overlapping no val block) and val tiles (those of its val
    blocks; segprep/blocks.py): yields (split, crop number, record, stats), record None for what is only counted,
    as `encode_crops`."""
    from segprep import blocks

    height, width = classes.shape
    size = config.crop_size
    present = None if empty is None else blocks.present_blocks(empty, (0, 0), config.split_blocks, width)
    chosen = blocks.choose(image_id, height, width, config.split_blocks, config.split_fraction, config.seed, present)
    tally = Stats()
    rule = redraw_rule(config, lambda box: crops.cut(classes, box, IGNORE_LABEL),
                       None if empty is None else lambda box: nodata_share(empty, box), tally)
    for k in range(config.crops_per_image or crops.auto_crop_count(height, width, size)):
        allowed = blocks.training_draws(chosen, size, config.seed, image_id, k, 10)
        if not allowed:
            tally.block_crops_dropped += 1
            continue
        box = crops.pick(allowed, rule)
        record, stats = encode_crop(image_id, box, image, classes, (0, 0), classes.shape, config, bgr, rasters,
                                    nodata, grid)
        yield "train", k, record, stats
    yield "train", -1, None, tally
    for k, box in enumerate(chosen.tiles(size)):
        if empty is not None and tile_is_empty(empty, box):
            yield "val", k, None, Stats(nodata_tiles_skipped=1)
            continue
        record, stats = encode_crop(image_id, box, image, classes, (0, 0), classes.shape, config, bgr, rasters,
                                    nodata, grid)
        yield "val", k, record, stats
    yield "val", -1, None, Stats(images=1, val_blocks=len(chosen.val),
                                 data_blocks=chosen.count if present is None else len(present))


def tile_is_empty(empty: np.ndarray, box: crops.CropBox, origin: tuple[int, int] = (0, 0)) -> bool:
    """Whether a tile's source pixels all hold no data (`empty` of a region from `origin` on)."""
    y, x = box.y - origin[0], box.x - origin[1]
    return bool(empty[y:y + box.height, x:x + box.width].all())


def convert_pair(image_id: str, image_bytes: bytes, mask_bytes: bytes, config: ConvertConfig,
                 training: bool) -> tuple[list[tuple[int, CropRecord]], Stats]:
    """→ ([(crop number, record)], stats): the whole conversion of one pair, as a plain loop would do it.
    Raises `InputError` for a pair that cannot be used."""
    source = decode_source(image_bytes, mask_bytes, config, bgr=True)  # BGR: never swapped
    records, total = [], source.stats
    if source.grid is not None:
        from segprep.formats.metadata import grid_entry

        total.grids = {image_id: grid_entry(source.grid, *source.classes.shape)}
    for k, record, stats in encode_crops(image_id, source.image, source.classes, config, training, bgr=True,
                                         rasters=source.extras, nodata=source.nodata, grid=source.grid,
                                         empty=source.empty):
        if record is not None:
            records.append((k, record))
        total.add(stats)
    return records, total
