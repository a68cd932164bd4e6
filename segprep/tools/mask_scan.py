"""One mask of a dataset, scanned: its kind and size, and every colour (or index value) it holds with its pixel and
"solid" pixel counts (a pixel whose 3×3 neighbourhood is all its own colour), in bands of rows so that memory stays
flat; the header first, so that nothing above --max_pixels is decoded whole (a tiled TIFF is read a band at a time).
What the colours mean is segprep/tools/colors.py's; the command is segprep/scan.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from segprep import codec, geo, headers, layout, lookup, pairs, storage
from segprep.convert import DEFAULT_MAX_PIXELS, too_large
from segprep.tools import leakage

_BAND = 1 << 20


@dataclasses.dataclass
class MaskScan:
    """One mask: its kind and size, and its colours (or index values) with pixel and solid-pixel counts."""

    split: str
    image_id: str
    kind: str = ""  # "color", "palette", "index" (or "" when it could not be read)
    depth: int = 8
    fmt: str = "png"
    height: int = 0
    width: int = 0
    keys: np.ndarray | None = None  # colour keys (r << 16 | g << 8 | b), or index values
    counts: np.ndarray | None = None
    solid: np.ndarray | None = None
    error: str | None = None
    image: headers.ImageInfo | None = None  # the image's header
    image_error: str | None = None
    fingerprint: leakage.Fingerprint | None = None  # for the leakage checks
    extras: dict = dataclasses.field(default_factory=dict)  # extra input name → ExtraScan
    grid: object = None  # the image's georeferencing (segprep.geo.Grid), if any
    mask_grid: object = None  # the mask's

    @property
    def label(self) -> str:
        return f"{self.kind} {'JPEG' if self.fmt == 'jpeg' else f'{self.depth}-bit'}" + (
            " TIFF" if self.fmt == "tiff" else "")


@dataclasses.dataclass
class ExtraScan:
    """One extra input of one pair: its kind (stored type, bands, file format), size and value range."""

    kind: str = ""  # e.g. "float32 1-band TIFF", "uint16 1-band @4"
    height: int = 0
    width: int = 0
    low: float | None = None  # finite values' range
    high: float | None = None
    nonfinite: int = 0  # NaN and infinite values
    error: str | None = None  # missing, unreadable, too large


def scan_extras(root: str, pair: pairs.Pair, result: MaskScan, extra_inputs, images, max_pixels: int) -> None:
    """Each extra input of `pair` (segprep/extras.py): decoded whole, as prepare reads it, when its header is
    within `max_pixels`."""
    from segprep import extras

    image_raster = None
    for extra in extra_inputs:
        scan = result.extras[extra.name] = ExtraScan()
        try:
            if extra.bands:
                if result.image is None or too_large(result.image.width, result.image.height, max_pixels, ""):
                    scan.error = "the image is unreadable or above --max_pixels"
                    continue
                if image_raster is None:
                    image_raster = extras.decode(storage.read_bytes(layout.join(root, pair.image)), "image")
                raster, fmt = extras.bands_of(image_raster, extra), "@" + ",".join(map(str, extra.bands))
            else:
                path = layout.join(root, extra.path(images, pair.image, pair.split))
                if storage.absent(path):
                    scan.error = f"no {path}"
                    continue
                with storage.open_read(path) as f:
                    info = headers.probe(f)
                    if too_large(info.width, info.height, max_pixels, ""):
                        scan.kind, scan.height, scan.width = f"{info.format.upper()}", info.height, info.width
                        scan.error = f"{info.width}×{info.height} is above --max_pixels: not decoded"
                        continue
                    f.seek(0)
                    raster, fmt = extras.decode(f.read(), f"extra input {extra.name}"), info.format.upper()
        except codec.DecodeError as e:
            scan.error = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - unreadable: reported, the scan goes on
            scan.error = f"{type(e).__name__}: {e}"
            continue
        scan.kind = f"{raster.dtype} {raster.shape[2]}-band {fmt}"
        scan.height, scan.width = raster.shape[:2]
        finite = np.isfinite(raster) if raster.dtype.kind == "f" else None
        values = raster if finite is None else raster[finite]
        scan.nonfinite = 0 if finite is None else int(finite.size - np.count_nonzero(finite))
        if values.size:
            scan.low, scan.high = float(values.min()), float(values.max())


def _solid(keys: np.ndarray) -> np.ndarray:
    """Pixels whose 3×3 neighbourhood has their own value (outside the image counts as agreeing)."""
    p = np.pad(keys, 1, mode="edge")
    h, w = keys.shape
    solid = np.ones((h, w), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                solid &= p[dy:dy + h, dx:dx + w] == keys
    return solid


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, pixel counts, solid pixel counts) of a 2-D key array, in bands of rows."""
    step = max(1, _BAND // max(1, keys.shape[1]))
    return _count_bands(_bands(lambda y0, y1: keys[y0:y1], keys.shape[0], step))


def _bands(read, height: int, step: int):
    """(rows with one row of context above and below, the slice of them that is the band) for each band of `step`
    rows; `read(y0, y1)` gives the 2-D keys of rows [y0, y1)."""
    for y in range(0, height, step):
        top, bottom = max(0, y - 1), min(height, y + step + 1)
        yield read(top, bottom), slice(y - top, y - top + min(step, height - y))


def _count_bands(bands) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total, solid = lookup.ColorCounter(), lookup.ColorCounter()
    for ctx, inner in bands:
        band = ctx[inner]
        total.add(band.ravel())
        solid.add(band[_solid(ctx)[inner]])
    found, counts = total.merged()
    solid_keys, solid_counts = solid.merged()
    solid_per_key = np.zeros(found.size, np.int64)
    solid_per_key[np.searchsorted(found, solid_keys)] = solid_counts
    return found, counts, solid_per_key


def _keys(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint32) if mask.ndim == 2 else lookup.color_keys(mask)


def _scan_mask(f, result: MaskScan, max_value: int, max_pixels: int) -> None:
    """Kind, size and colour counts of the mask open in `f`: decoded whole, or — a tiled or stripped TIFF above
    `max_pixels` — a band of rows at a time; another file above it is an error, never decoded."""
    info = headers.probe(f)
    result.fmt = info.format
    result.width, result.height = info.width, info.height
    why = too_large(info.width, info.height, max_pixels, "convert it to a tiled TIFF, which is read window by window")
    regions = None
    if why and info.format == "tiff":
        from segprep.regions import TiffRegions

        f.seek(0)
        regions = TiffRegions(f)
        why = None if regions.region_readable else why
    if why:
        result.error = why
        return
    if regions is None:
        f.seek(0)
        data = f.read()
        mask, result.kind = codec.decode_mask(data, max_value)
        if result.fmt == "png":
            result.depth = headers.png_color_type(data)[1]
        elif result.fmt == "tiff":
            result.depth = mask.dtype.itemsize * 8 if mask.ndim == 2 else 8
        result.keys, result.counts, result.solid = _count(_keys(mask))
        return
    kinds = []

    def read(y0: int, y1: int) -> np.ndarray:
        mask, kind = codec.tiff_mask(regions.tiff(regions.read(y0, y1, 0, regions.width)), max_value)
        if not kinds:
            kinds.append((kind, mask.dtype.itemsize * 8 if mask.ndim == 2 else 8))
        return _keys(mask)

    step = max(1, _BAND // max(1, regions.width))
    result.keys, result.counts, result.solid = _count_bands(_bands(read, regions.height, step))
    result.kind, result.depth = kinds[0]


def scan_pair(root: str, pair: pairs.Pair, max_value: int = 255, fingerprint: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS, extra_inputs=(), images=None) -> MaskScan:
    """Reads and decodes one mask and the header of its image (with `fingerprint`, the whole image: its digest and
    perceptual hash, for the leakage checks); a file that cannot be read is reported in `error` / `image_error`,
    and the scan goes on. Sizes come from the headers first: nothing above `max_pixels` is decoded whole."""
    result = MaskScan(pair.split, pair.image_id)
    if pair.reason:
        result.error = pair.error
        return result
    image_path = layout.join(root, pair.image)
    path = layout.join(root, pair.mask)
    for what, where in (("image", image_path), ("mask", path)):
        why = pairs.outside_root(root, where)
        if why:
            result.error = f"{what}: {why}"
            return result
    try:
        with storage.open_read(image_path) as f:
            result.image = headers.probe(f)
            if result.image.format == "tiff":
                result.grid = geo.read_file(f)
            if fingerprint:
                result.fingerprint = leakage.fingerprint(f, result.image.width, result.image.height, max_pixels)
    except codec.DecodeError as e:
        result.image_error = str(e)
    except Exception as e:  # noqa: BLE001 - missing or unreadable: reported, the scan goes on
        result.image_error = f"no image at {image_path}" if storage.absent(image_path) else \
            f"{type(e).__name__}: {e}"
    try:
        with storage.open_read(path) as f:
            result.mask_grid = geo.read_file(f)
            _scan_mask(f, result, max_value, max_pixels)
    except codec.DecodeError as e:
        result.error = str(e)
    except Exception as e:  # noqa: BLE001 - missing or unreadable: reported, the scan goes on
        result.error = f"no mask at {path}" if storage.absent(path) else f"{type(e).__name__}: {e}"
    if result.error:
        result.keys = result.counts = result.solid = None
    elif extra_inputs:
        scan_extras(root, pair, result, extra_inputs, images, max_pixels)
    return result
