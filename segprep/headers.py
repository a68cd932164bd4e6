"""What an image file says before it is decoded: its format (from its first bytes, never its name), whether it is
whole (a truncated JPEG or PNG is found by walking its segments or chunks to its end marker; bytes after the end
marker, a phone's Motion Photo video or a maker's trailer, are allowed), its size, bands and bit depth
(`probe`, from the header alone), and a JPEG's or PNG's EXIF orientation.

Every command reads sizes here first, so that nothing above --max_pixels is ever decoded (segprep/codec.py decodes).
"""

from __future__ import annotations

import dataclasses
import re
import struct

import numpy as np


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


JPEG_SOI = b"\xff\xd8"


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


class DecodeError(ValueError):
    """A file that is not a usable image or mask; `reason` is a short code for the error record when it is not
    simply a bad file (e.g. "needs_bands", "needs_image_range")."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


def sniff(data: bytes) -> str:
    """'jpeg', 'png', 'tiff' or raise: which codec `data` is in."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data[:4] in TIFF_MAGIC:
        return "tiff"
    raise DecodeError(f"not a JPEG, PNG or TIFF file (starts with {data[:8]!r})")


def check_complete(data: bytes, fmt: str) -> None:
    if fmt == "jpeg":
        _jpeg_end(data)
    elif fmt == "png":
        _png_end(data)
    # TIFF: checked where its segments are known (_tiff_read)


# A marker inside entropy-coded data: FF then anything but stuffing (00) or a restart marker (D0-D7); FF FF is fill
# before a marker. One literal first byte lets the regex engine scan at memchr speed (~3 ms for 10 MB).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_markers(data: bytes):
    """(marker, offset just past its two-byte length field or past the marker) for each marker of a JPEG, walking
    its segments and scans as libjpeg does: stray bytes and fill bytes are skipped, a scan's entropy-coded data runs
    to the next real marker, and thumbnails inside APPn segments are skipped whole. Stops where the data ends or
    after EOI."""
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker, so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return
            continue
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            return
        marker = data[pos]
        pos += 1
        if marker == 0xD9 or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # EOI, TEM, RSTn, SOI: no length
            yield marker, pos
            if marker == 0xD9:
                return
            continue
        if pos + 2 > size:
            return
        yield marker, pos + 2
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return
            pos = found.start()


def _jpeg_end(data: bytes) -> int:
    """The offset just past a JPEG's end-of-image marker; anything after it (a Motion Photo's video, a maker's
    trailer) is not part of the image. Raises `DecodeError` when the data ends before it: a truncated file."""
    for marker, pos in _jpeg_markers(data):
        if marker == 0xD9:
            return pos
    raise DecodeError(f"truncated JPEG: the data ends before the end-of-image marker ({len(data)} bytes)")


def _png_end(data: bytes) -> int:
    """The offset just past a PNG's IEND chunk, found by walking its chunks; bytes after it are ignored. Raises
    `DecodeError` when a chunk runs past the end of the data or IEND never comes: a truncated file."""
    pos, size = len(PNG_SIGNATURE), len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        pos += 12 + length
        if tag == b"IEND" and pos <= size:
            return pos
    raise DecodeError(f"truncated PNG: the data ends before the IEND chunk ({size} bytes)")


EXIF_ROTATION = {2: "mirrored", 3: "rotated 180°", 4: "mirrored upside down", 5: "mirrored and rotated 90°",
                 6: "rotated 90° clockwise", 7: "mirrored and rotated 90°", 8: "rotated 90° anticlockwise"}


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1-8) of a JPEG (APP1 "Exif") or PNG (eXIf chunk): how viewers turn the stored
    pixels to show them. 1 (as stored) when there is none or it cannot be read."""
    tiff = None
    if data.startswith(JPEG_SOI):
        for marker, pos in _jpeg_markers(data):
            if marker == 0xE1 and data[pos:pos + 6] == b"Exif\x00\x00":
                length = int.from_bytes(data[pos - 2:pos], "big")
                tiff = data[pos + 6:pos - 2 + length]
                break
            if marker in (0xDA, 0xD9):  # EXIF comes before the first scan
                break
    elif data.startswith(PNG_SIGNATURE):
        pos = len(PNG_SIGNATURE)
        while pos + 12 <= len(data):
            length, tag = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
            if tag == b"eXIf":
                tiff = data[pos + 8:pos + 8 + length]
                break
            if tag in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
    return _tiff_orientation(tiff) if tiff else 1


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 274 (Orientation) of the first IFD of an EXIF block (a little TIFF), or 1."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
    for i in range(count):
        entry = tiff[offset + 2 + 12 * i:offset + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:  # SHORT
            (value,) = struct.unpack(order + "H", entry[8:10])
            return value if 1 <= value <= 8 else 1
    return 1


def describe_dtype(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "1-bit"
    kind = "floating-point" if dtype.kind == "f" else ("signed " if dtype.kind == "i" else "")
    return f"{dtype.itemsize * 8}-bit {kind}".strip()


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, read without decoding its pixels."""

    format: str  # "jpeg", "png", "tiff"
    width: int
    height: int
    bands: int
    bits: str  # "8-bit", "16-bit", "1-bit", "32-bit floating-point", ...
    kind: str = ""  # PNG/TIFF: "palette" for palette-mode files
    tiling: str = ""  # TIFF: "tiled" or "stripped"
    compression: str = ""  # TIFF: "none", "deflate", "lzw", "jpeg", ...
    orientation: int = 1  # JPEG/PNG: the EXIF orientation (1: as stored), when it is in the first 64 KiB

    @property
    def label(self) -> str:
        parts = [self.format.upper(), f"{self.bands}-band" if not self.kind else self.kind, self.bits]
        if self.format == "tiff":
            parts += [self.tiling, self.compression]
        return " ".join(p for p in parts if p)


_PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def probe(f) -> ImageInfo:
    """The header of the image in the binary file object `f` (seekable for TIFF), without decoding pixels."""
    head = f.read(1 << 16)
    fmt = sniff(head)
    if fmt == "png":
        color_type, depth = png_color_type(head)
        width, height = struct.unpack(">II", head[16:24])
        return ImageInfo("png", width, height, _PNG_BANDS.get(color_type, 0), f"{depth}-bit",
                         "palette" if color_type == 3 else "", orientation=exif_orientation(head))
    if fmt == "jpeg":
        sof = _jpeg_sof(head)
        if sof is None:
            sof = _jpeg_sof(head + f.read())
        if sof is None:
            raise DecodeError("corrupt JPEG: no frame header (SOF)")
        bits, height, width, bands = sof
        return ImageInfo("jpeg", width, height, bands, f"{bits}-bit", orientation=exif_orientation(head))
    import tifffile

    f.seek(0)
    try:
        with tifffile.TiffFile(f) as tif:
            page = tif.pages[0]
            compression = getattr(page.compression, "name", str(page.compression)).lower()
            compression = {"adobe_deflate": "deflate", "none": "uncompressed"}.get(compression, compression)
            dtype = page.dtype if page.dtype is not None else np.dtype(np.uint8)
            return ImageInfo("tiff", int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel),
                             describe_dtype(dtype) if page.bitspersample != 1 else "1-bit",
                             "palette" if int(page.photometric) == 3 else "",
                             "tiled" if page.is_tiled else "stripped", compression)
    except Exception as e:  # noqa: BLE001
        raise DecodeError(f"corrupt TIFF: {type(e).__name__}: {e}") from None


def _jpeg_sof(data: bytes) -> tuple[int, int, int, int] | None:
    """(bits, height, width, components) from a JPEG's frame header, or None when `data` ends before it."""
    for marker, pos in _jpeg_markers(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if pos + 6 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 1:pos + 5])
            return data[pos], height, width, data[pos + 5]
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
    return None


def png_color_type(data: bytes) -> tuple[int, int]:
    """(colour type, bit depth) from a PNG's IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise DecodeError("corrupt PNG: no IHDR header")
    return data[25], data[24]
