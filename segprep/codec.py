"""Image and mask codecs over OpenCV (JPEG, PNG) and tifffile (TIFF), with everything in RGB order at the boundary.

OpenCV decodes and encodes BGR; every function here converts at the edge, so callers only ever see RGB.
TIFFs (GeoTIFFs included: stripped or tiled, uncompressed, deflate, LZW or JPEG-compressed, chunky or planar) are
read by tifffile with imagecodecs' codecs; only the first page (the full-resolution image; overviews follow it) is
read. Images leave here as (H, W, 3) uint8 RGB, whatever they were stored as:
- 1 band → grey replicated to RGB; 3 bands → RGB; an alpha band (PNG RGBA, a TIFF extra sample marked alpha) is
  dropped; more bands need `bands` (1-based band numbers, in the order to keep: (4, 1, 2) turns RGBIR into IRRG);
- 8-bit values pass; 16-bit, 32-bit and floating-point ones need `value_range` (lo, hi), mapped linearly onto
  0..255 and clipped. Without it the image is refused with its value range, never squeezed silently.
Decoders reject what OpenCV would silently accept: empty files, truncated JPEGs (libjpeg fills the missing part
with grey and only warns) and truncated PNGs, found by walking the file's segments or chunks to its end marker;
bytes after the end marker (a phone's Motion Photo video, a maker's trailer) are allowed (segprep/headers.py walks
them, and reads sizes before anything is decoded). Pixels are decoded as stored: a JPEG's or PNG's EXIF
orientation (`headers.exif_orientation`) is applied by the caller with `orient`, who knows whether the mask was
drawn on the stored pixels or on the photo as viewers show it (`segprep.convert`, --exif).

Mask PNGs come in three kinds, told apart by the PNG header's colour type:
- "color":   RGB(A) colour masks (type 2 or 6) → (H, W, 3) RGB;
- "palette": palette-mode PNGs (type 3, real VOC; 1-, 2-, 4- or 8-bit) → expanded through their own palette to
             (H, W, 3) RGB, so the colours go through the same palette lookup as colour masks (never decoded as
             grey values);
- "index":   1-channel PNGs (type 0 or 4) → (H, W) class indices exactly as stored, at any bit depth: 1-, 2- and
             4-bit values are never scaled up to 8 bits, and 16-bit values above 255 are an error naming them.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import cv2
import numpy as np

from segprep.headers import PNG_SIGNATURE, DecodeError, check_complete, describe_dtype, png_color_type, sniff  # noqa: F401
# DecodeError is raised by both modules and named `codec.DecodeError` by their callers.


_IMREAD_IMAGE = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


MASK_KINDS = {0: "index", 2: "color", 3: "palette", 4: "index", 6: "color"}


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels (H, W[, C]) as viewers show them under EXIF `orientation` (1-8); 5-8 swap height and
    width."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transposed: 5 as it is, 6 and 8 mirrored, 7 both
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    return np.ascontiguousarray(image)


@dataclasses.dataclass(frozen=True)
class Tiff:
    """The first page of a TIFF, decoded: (H, W) or (H, W, S) samples, and what the header says of them."""

    array: np.ndarray
    photometric: int  # 0/1 grey, 2 RGB, 3 palette, 6 YCbCr (decoded to RGB by the JPEG codec)
    alpha: int | None  # the sample that is alpha, if an extra sample is marked so
    colormap: np.ndarray | None  # (3, 2**bits) for palette TIFFs


def _tiff_read(data: bytes) -> Tiff:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
            if ends and max(ends) > len(data):
                raise DecodeError(f"truncated TIFF: its image data runs to byte {max(ends)} but the file has "
                                  f"{len(data)} bytes")
            array = page.asarray()
            axes = page.axes
            photometric = int(page.photometric)
            extras = [int(e) for e in (page.extrasamples or ())]
            colormap = page.colormap
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile and its codecs raise many kinds for a bad file
        raise DecodeError(f"corrupt TIFF: {type(e).__name__}: {e}") from None
    keep = [a for a in axes if a in "YXS"]
    if len(keep) != len(axes):  # singleton axes tifffile names (e.g. a 1-frame 'IYX')
        extra = tuple(i for i, a in enumerate(axes) if a not in "YXS")
        if any(array.shape[i] != 1 for i in extra):
            raise DecodeError(f"TIFF page of shape {array.shape} ({axes}) is not one image")
        array = array.reshape([n for n, a in zip(array.shape, axes) if a in "YXS"])
        axes = "".join(keep)
    if axes == "SYX":  # planar configuration: one plane a band
        array = np.moveaxis(array, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise DecodeError(f"TIFF page with axes {axes} is not an image")
    samples = array.shape[2] if array.ndim == 3 else 1
    alpha = None
    first_extra = samples - len(extras)
    for i, kind in enumerate(extras):
        if kind in (1, 2):  # associated or unassociated alpha
            alpha = first_extra + i
            break
    return Tiff(array, photometric, alpha, colormap)


def decode_image(data: bytes, bands: tuple[int, ...] | None = None,
                 value_range: tuple[float, float] | None = None, bgr: bool = False) -> np.ndarray:
    """JPEG, PNG or TIFF bytes → (H, W, 3) uint8 RGB (see the module docstring for bands and value ranges), or
    BGR with `bgr`: OpenCV's own order, which the prepare pipeline keeps from decoder to encoder so that a JPEG or
    PNG is never swapped at all."""
    fmt = sniff(data)
    check_complete(data, fmt)
    if fmt == "tiff":
        return _order(tiff_image(_tiff_read(data), bands, value_range), bgr)
    wide = fmt == "png" and png_color_type(data)[1] == 16
    if not wide and bands is None and value_range is None:  # the common case, in one decode
        out = _imdecode(data, _IMREAD_IMAGE)
        if out is None:
            raise DecodeError(f"corrupt {fmt.upper()}: the decoder could not read it")
        return out if bgr else cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)  # in place: no second copy
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        raise DecodeError(f"corrupt {fmt.upper()}: the decoder could not read it")
    alpha = None
    if raw.ndim == 3:
        raw = raw[..., [2, 1, 0, 3][:raw.shape[2]]] if raw.shape[2] >= 3 else raw  # BGR(A) → RGB(A)
        alpha = 3 if raw.shape[2] == 4 else (1 if raw.shape[2] == 2 else None)
    return _order(to_rgb8(raw, bands, value_range, alpha), bgr)


GDAL_NODATA = 42113  # the TIFF tag GDAL writes a raster's nodata value in (ASCII)


def tiff_nodata(page) -> float | None:
    """The nodata value a TIFF page declares (GDAL_NODATA: "-9999", "nan", ...), or None."""
    tag = page.tags.get(GDAL_NODATA)
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip().strip("\x00"))
    except ValueError:
        return None


def raster_nodata(data: bytes) -> float | None:
    """The nodata value a raster file declares (a TIFF's GDAL_NODATA; PNG and JPEG have none), or None."""
    if sniff(data) != "tiff":
        return None
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return tiff_nodata(tif.pages[0])
    except Exception:  # noqa: BLE001 - the decode reports a bad file
        return None


def decode_raster(data: bytes) -> np.ndarray:
    """JPEG, PNG or TIFF bytes → the stored samples, (H, W) or (H, W, C) in the file's own type and bands (RGB(A)
    order for 3 or 4; a PNG's grey + alpha as 2 bands), not made 8-bit RGB: what an extra input is read as."""
    fmt = sniff(data)
    check_complete(data, fmt)
    if fmt == "tiff":
        return _tiff_read(data).array
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        raise DecodeError(f"corrupt {fmt.upper()}: the decoder could not read it")
    if raw.ndim == 3:
        if fmt == "png" and png_color_type(data)[0] == 4:  # grey + alpha, which OpenCV expands to BGRA
            return np.ascontiguousarray(raw[..., [0, 3]])
        return np.ascontiguousarray(raw[..., [2, 1, 0, 3][:raw.shape[2]]])
    return raw


def _imdecode(data, flags: int) -> np.ndarray | None:
    """cv2.imdecode, its refusals (an assertion on a size beyond OpenCV's own limit, a broken stream) turned into a
    DecodeError of one line; None, as OpenCV says, for data it cannot read."""
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error as e:
        text = str(e)
        why = "it is larger than OpenCV decodes" if "pixels" in text.lower() or "size" in text.lower() else \
            "the decoder refused it"
        raise DecodeError(f"cannot decode: {why}") from None


def _order(rgb: np.ndarray, bgr: bool) -> np.ndarray:
    """An (H, W, 3) RGB array we own, turned to BGR in place when `bgr`."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=rgb) if bgr else rgb


def tiff_image(tiff: Tiff, bands: tuple[int, ...] | None = None,
               value_range: tuple[float, float] | None = None) -> np.ndarray:
    """A decoded TIFF page (or a region of one: `segprep.regions`) → (H, W, 3) uint8 RGB, as `decode_image`."""
    array = tiff.array
    if tiff.photometric == 3 and tiff.colormap is not None and array.ndim == 2:  # palette image: its colours
        array = _colormap_rgb(tiff.colormap)[array]
    return to_rgb8(array, bands, value_range, tiff.alpha)


def _colormap_rgb(colormap: np.ndarray) -> np.ndarray:
    """A TIFF colour map (3, N) of 16-bit values → (N, 3) uint8 RGB (writers that store 8-bit values are kept)."""
    cmap = np.asarray(colormap)
    if cmap.max(initial=0) > 255:
        cmap = cmap >> 8
    return np.ascontiguousarray(cmap.T.astype(np.uint8))


def to_rgb8(array: np.ndarray, bands: tuple[int, ...] | None = None,
            value_range: tuple[float, float] | None = None, alpha: int | None = None) -> np.ndarray:
    """(H, W) or (H, W, C) samples of any numeric type → (H, W, 3) uint8 RGB: bands picked (1-based) or the
    alpha band dropped, grey replicated, values mapped from `value_range` onto 0..255 when they are not 8-bit."""
    if array.ndim == 2:
        array = array[..., None]
    count = array.shape[2]
    if bands:
        over = [b for b in bands if not 1 <= b <= count]
        if over:
            raise DecodeError(f"image has {count} band{'s' if count != 1 else ''}; --bands asks for band "
                              f"{over[0]}", "bad_bands")
        array = array[..., [b - 1 for b in bands]] if list(bands) != list(range(1, count + 1)) else array
    else:
        if alpha is not None and count in (2, 4):
            array = array[..., [i for i in range(count) if i != alpha]]
        if array.shape[2] not in (1, 3):
            n = array.shape[2]
            raise DecodeError(f"image has {n} bands ({describe_dtype(array.dtype)}); records hold RGB: pass --bands "
                              f"with the 3 to keep, in order (e.g. --bands 1,2,3, or --bands 4,1,2 for IR-R-G from "
                              "R-G-B-IR)", "needs_bands")
    if array.shape[2] == 2:
        raise DecodeError("--bands picks 2 bands; records hold 1 (grey, shown as RGB) or 3", "bad_bands")
    array = _to_uint8(array, value_range)
    if array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8 and value_range is None:
        return array
    if value_range is None:
        lo, hi = (float(np.nanmin(array)), float(np.nanmax(array))) if array.size else (0.0, 0.0)
        shown = f"{lo:g}..{hi:g}"
        raise DecodeError(f"{describe_dtype(array.dtype)} image with values {shown}: records hold 8 bits; pass "
                          f"--image_range LO,HI to map LO..HI linearly onto 0..255 (e.g. --image_range "
                          f"{_round_down(lo):g},{_round_up(hi):g})", "needs_image_range")
    lo, hi = value_range
    scale = 255.0 / (hi - lo)
    out = np.empty(array.shape, np.uint8)
    step = max(1, (1 << 20) // max(1, array.shape[1] * array.shape[2]))  # ~1 M samples a band: no full-size floats
    for y in range(0, array.shape[0], step):
        band = (array[y:y + step].astype(np.float32) - np.float32(lo)) * np.float32(scale)
        np.clip(band, 0, 255, out=band)
        np.rint(band, out=band)
        out[y:y + step] = band
    return out


def _round_down(x: float) -> float:
    return float(np.floor(x)) if x == x else 0.0


def _round_up(x: float) -> float:
    return float(np.ceil(x)) if x == x else 0.0


def decode_mask(data: bytes, max_value: int = 255, bgr: bool = False) -> tuple[np.ndarray, str]:
    """Mask bytes → (array, kind): (H, W, 3) RGB for "color"/"palette" (and lossy JPEG colour masks, kind
    "color"), BGR with `bgr`; (H, W) uint8 for "index" — uint16 when `max_value` > 255 (a palette's index map reads
    16-bit values) and the mask is 16-bit."""
    fmt = sniff(data)
    check_complete(data, fmt)
    if fmt == "tiff":
        mask, kind = tiff_mask(_tiff_read(data), max_value)
        return (_order(np.array(mask), bgr) if mask.ndim == 3 and bgr else mask), kind
    buf = np.frombuffer(data, np.uint8)
    if fmt == "jpeg":
        kind = "color"
    else:
        color_type, depth = png_color_type(data)
        if color_type not in MASK_KINDS:
            raise DecodeError(f"corrupt PNG: unknown colour type {color_type}")
        kind = MASK_KINDS[color_type]
        if kind == "index":
            return _decode_index(buf, depth, max_value), kind
    out = _imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # palettes expand to their colours
    if out is None:
        raise DecodeError(f"corrupt {fmt.upper()} mask: the decoder could not read it")
    return (out if bgr else cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)), kind


def tiff_mask(tiff: Tiff, max_value: int = 255) -> tuple[np.ndarray, str]:
    """A decoded TIFF page (or a region of one: `segprep.regions`) → (mask, kind), as `decode_mask`."""
    array = tiff.array
    if array.ndim == 2 and tiff.photometric == 3 and tiff.colormap is not None:  # palette TIFF: its colours
        return _colormap_rgb(tiff.colormap)[array], "palette"
    if array.ndim == 3:
        if tiff.alpha is not None and array.shape[2] in (2, 4):
            array = array[..., [i for i in range(array.shape[2]) if i != tiff.alpha]]
        if array.shape[2] == 1:
            array = array[..., 0]
    if array.ndim == 3:
        if array.shape[2] != 3 or array.dtype != np.uint8:
            raise DecodeError(f"{describe_dtype(array.dtype)} mask with {array.shape[2]} bands: masks are class "
                              "indices (1 band) or 8-bit RGB colours (3 bands)")
        return np.ascontiguousarray(array), "color"
    if array.dtype == np.bool_:
        return array.astype(np.uint8), "index"
    if array.dtype.kind not in "ui":
        raise DecodeError(f"{describe_dtype(array.dtype)} mask: class indices must be integers")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise DecodeError(f"{describe_dtype(array.dtype)} mask holds negative values (down to {array.min()}); class "
                          "ids must be 0..255")
    return _narrow(array, max_value, describe_dtype(array.dtype)), "index"


def _narrow(arr: np.ndarray, max_value: int, what: str) -> np.ndarray:
    """Integer class values → uint8, or uint16 when `max_value` > 255; values above `max_value` are an error."""
    if arr.dtype == np.uint8:
        return arr
    counts = np.bincount(arr.ravel(), minlength=256) if arr.size else np.zeros(256, np.int64)
    big = np.flatnonzero(counts[max_value + 1:]) + max_value + 1
    if big.size:
        shown = ", ".join(f"{v}×{counts[v]}" for v in big[np.argsort(-counts[big], kind="stable")][:5])
        raise DecodeError(f"{what} index mask holds {int(counts[big].sum())} pixels with values above {max_value} "
                          f"({big.size} values: {shown}{' ...' if big.size > 5 else ''}); class ids must be "
                          f"0..{max_value}" + (" (a palette's index_map can map wider values)"
                                               if max_value == 255 else ""))
    return arr.astype(np.uint8 if max_value <= 255 else np.uint16)


def _decode_index(buf: np.ndarray, depth: int, max_value: int = 255) -> np.ndarray:
    """A grey PNG of class indices at any bit depth → (H, W) uint8, values exactly as stored.

    libpng widens 1-, 2- and 4-bit grey to 8 bits by bit replication (a 1-bit 1 becomes 255, a 2-bit 1 becomes
    85), which is multiplication by 255 / (2^depth - 1): dividing by it gives the stored values back exactly."""
    arr = _imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DecodeError("corrupt PNG: the decoder could not read it")
    if arr.ndim == 3:  # grey + alpha: keep the grey channel
        arr = np.ascontiguousarray(arr[..., 0])
    if depth < 8:
        np.floor_divide(arr, 255 // ((1 << depth) - 1), out=arr)
    elif arr.dtype != np.uint8:  # 16-bit: values must still be class ids (or keys of the palette's index map)
        arr = _narrow(arr, max_value, f"{depth}-bit")
    return arr


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95, consume: bool = False,
                 bgr: bool = False) -> bytes:
    """(H, W, 3) uint8 RGB (BGR with `bgr`) → JPEG or PNG bytes. With `consume`, `rgb` is turned to BGR in place
    instead of copied (no second image-sized buffer for a large tile; the caller must not use it afterwards)."""
    if bgr:
        pixels = rgb
    elif consume and rgb.flags.c_contiguous:
        pixels = rgb
        for y in range(0, rgb.shape[0], 256):  # in bands: OpenCV copies its input when converting in place
            band = pixels[y:y + 256]
            cv2.cvtColor(band, cv2.COLOR_RGB2BGR, dst=band)
    else:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, out = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, out = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"image format must be 'jpeg' or 'png'. Received: {fmt!r}")
    if not ok:
        raise DecodeError(f"could not encode a {rgb.shape} image as {fmt}")
    return out.tobytes()


def encode_index_png(classes: np.ndarray) -> bytes:
    """(H, W) uint8 class indices → an 8-bit single-channel ('L') PNG, the form DeepLab's decoder expects."""
    if classes.ndim != 2 or classes.dtype != np.uint8:
        raise ValueError(f"Expected (H, W) uint8 class indices. Received: {classes.shape} {classes.dtype}")
    ok, out = cv2.imencode(".png", classes, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DecodeError(f"could not encode a {classes.shape} mask as PNG")
    return out.tobytes()


def encode_palette_png(indices: np.ndarray, colors: np.ndarray) -> bytes:
    """(H, W) uint8 indices + (N ≤ 256, 3) RGB colours → a palette-mode PNG, as VOC ships its masks.

    OpenCV cannot write palette PNGs, so the few chunks are written here (zlib, filter type 0 on every row)."""
    height, width = indices.shape
    raw = np.zeros((height, width + 1), np.uint8)
    raw[:, 1:] = indices

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    plte = np.asarray(colors, np.uint8).reshape(-1, 3).tobytes()
    return (PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
