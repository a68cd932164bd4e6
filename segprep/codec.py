"""Image and mask codecs over OpenCV, with everything in RGB order at the boundary.

OpenCV decodes and encodes BGR; every function here converts at the edge, so callers only ever see RGB.
Decoders reject what OpenCV would silently accept: empty files, truncated JPEGs (libjpeg fills the missing part
with grey and only warns) and truncated PNGs, found by walking the file's segments or chunks to its end marker;
bytes after the end marker (a phone's Motion Photo video, a maker's trailer) are allowed. JPEG EXIF orientation
is ignored, as VOC's masks are not rotated.

Mask PNGs come in three kinds, told apart by the PNG header's colour type:
- "color":   RGB(A) colour masks (type 2 or 6) → (H, W, 3) RGB;
- "palette": palette-mode PNGs (type 3, real VOC; 1-, 2-, 4- or 8-bit) → expanded through their own palette to
             (H, W, 3) RGB, so the colours go through the same palette lookup as colour masks (never decoded as
             grey values);
- "index":   1-channel PNGs (type 0 or 4) → (H, W) class indices exactly as stored, at any bit depth: 1-, 2- and
             4-bit values are never scaled up to 8 bits, and 16-bit values above 255 are an error naming them.
"""

from __future__ import annotations

import re
import struct
import zlib

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_IMREAD_IMAGE = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
MASK_KINDS = {0: "index", 2: "color", 3: "palette", 4: "index", 6: "color"}


class DecodeError(ValueError):
    """A file that is not a usable image or mask."""


def sniff(data: bytes) -> str:
    """'jpeg', 'png' or raise: which codec `data` is in."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI):
        return "jpeg"
    raise DecodeError(f"not a JPEG or PNG file (starts with {data[:8]!r})")


def _check_complete(data: bytes, fmt: str) -> None:
    if fmt == "jpeg":
        _jpeg_end(data)
    else:
        _png_end(data)


# A marker inside entropy-coded data: FF then anything but stuffing (00) or a restart marker (D0-D7); FF FF is fill
# before a marker. One literal first byte lets the regex engine scan at memchr speed (~3 ms for 10 MB).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_end(data: bytes) -> int:
    """The offset just past a JPEG's end-of-image marker, found by walking its segments and scans; anything after
    it (a Motion Photo's video, a maker's trailer) is not part of the image. Raises `DecodeError` when the data
    ends before it: a truncated file. Thumbnails inside APPn segments are skipped whole, so their end markers are
    never taken for the image's."""
    pos, size = 2, len(data)
    while True:
        if pos >= size:
            break
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker, so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            continue
        if pos + 2 > size:
            break
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                break
            pos = found.start()
    raise DecodeError(f"truncated JPEG: the data ends before the end-of-image marker ({size} bytes)")


def _png_end(data: bytes) -> int:
    """The offset just past a PNG's IEND chunk, found by walking its chunks; bytes after it are ignored. Raises
    `DecodeError` when a chunk runs past the end of the data or IEND never comes: a truncated file."""
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        pos += 12 + length
        if tag == b"IEND" and pos <= size:
            return pos
    raise DecodeError(f"truncated PNG: the data ends before the IEND chunk ({size} bytes)")


def decode_image(data: bytes) -> np.ndarray:
    """JPEG or PNG bytes → (H, W, 3) uint8 RGB. Grey and RGBA images are converted to RGB."""
    fmt = sniff(data)
    _check_complete(data, fmt)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_IMAGE)
    if bgr is None:
        raise DecodeError(f"corrupt {fmt.upper()}: the decoder could not read it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second copy of a large tile


def png_color_type(data: bytes) -> tuple[int, int]:
    """(colour type, bit depth) from a PNG's IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise DecodeError("corrupt PNG: no IHDR header")
    return data[25], data[24]


def decode_mask(data: bytes) -> tuple[np.ndarray, str]:
    """Mask bytes → (array, kind): (H, W, 3) RGB for "color"/"palette" (and lossy JPEG colour masks, kind
    "color"), (H, W) uint8 for "index"."""
    fmt = sniff(data)
    _check_complete(data, fmt)
    buf = np.frombuffer(data, np.uint8)
    if fmt == "jpeg":
        kind = "color"
    else:
        color_type, depth = png_color_type(data)
        if color_type not in MASK_KINDS:
            raise DecodeError(f"corrupt PNG: unknown colour type {color_type}")
        kind = MASK_KINDS[color_type]
        if kind == "index":
            return _decode_index(buf, depth), kind
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # palette PNGs expand to their colours here
    if bgr is None:
        raise DecodeError(f"corrupt {fmt.upper()} mask: the decoder could not read it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr), kind


def _decode_index(buf: np.ndarray, depth: int) -> np.ndarray:
    """A grey PNG of class indices at any bit depth → (H, W) uint8, values exactly as stored.

    libpng widens 1-, 2- and 4-bit grey to 8 bits by bit replication (a 1-bit 1 becomes 255, a 2-bit 1 becomes
    85), which is multiplication by 255 / (2^depth - 1): dividing by it gives the stored values back exactly."""
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DecodeError("corrupt PNG: the decoder could not read it")
    if arr.ndim == 3:  # grey + alpha: keep the grey channel
        arr = np.ascontiguousarray(arr[..., 0])
    if depth < 8:
        np.floor_divide(arr, 255 // ((1 << depth) - 1), out=arr)
    elif arr.dtype != np.uint8:  # 16-bit: values must still be class ids
        counts = np.bincount(arr.ravel(), minlength=1 << 16)
        big = np.flatnonzero(counts[256:]) + 256
        if big.size:
            shown = ", ".join(f"{v}×{counts[v]}" for v in big[np.argsort(-counts[big], kind="stable")][:5])
            raise DecodeError(f"{depth}-bit index mask holds {int(counts[big].sum())} pixels with values above 255 "
                              f"({big.size} values: {shown}{' ...' if big.size > 5 else ''}); class ids must be "
                              "0..255")
        arr = arr.astype(np.uint8)
    return arr


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95, consume: bool = False) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG or PNG bytes. With `consume`, `rgb` is turned to BGR in place instead of copied
    (no second image-sized buffer for a large tile; the caller must not use it afterwards)."""
    if consume and rgb.flags.c_contiguous:
        bgr = rgb
        for y in range(0, rgb.shape[0], 256):  # in bands: OpenCV copies its input when converting in place
            band = bgr[y:y + 256]
            cv2.cvtColor(band, cv2.COLOR_RGB2BGR, dst=band)
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, out = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, out = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
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
    return (_PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
