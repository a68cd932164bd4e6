"""Georeferencing: where a GeoTIFF's pixels lie on the map, read (never guessed) and carried to every crop.

A raster's grid is its CRS and its affine pixel → map transform, in GDAL's order

    (x0, pixel width, row rotation, y0, column rotation, pixel height)

so that the map position of pixel (row r, column c)'s top-left corner is (x0 + c·w + r·rr, y0 + c·cr + r·h).
They are read with rasterio (GDAL: ModelTiepoint + ModelPixelScale or ModelTransformation, the GeoKey directory,
GDAL_NODATA), from the file's first kilobytes only: a 40,000² tile's header, local or gs://, without its pixels.
PNG and JPEG files, and TIFFs without georeferencing, have no grid (None).

A crop's transform is its source's shifted by the crop's offset (`crop_transform`), kept in float64: a
tf.train float list is float32, 0.5 m steps at a UTM northing of 5.8 million metres. Records carry it as 48
little-endian bytes (`pack`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct

from segprep.headers import TIFF_MAGIC

TRANSFORM_BYTES = struct.Struct("<6d")
# Two grids are one when their CRS are equal and their transforms agree within this share of a pixel (GDAL writes
# ModelPixelScale from a float that a round trip through text may move in its 15th digit).
PIXEL_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Grid:
    """A raster's georeferencing: its CRS ("EPSG:n" when it has one, else WKT), its GDAL-order transform (float64)
    and its nodata value (None when it declares none)."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None = None

    def shifted(self, y: int, x: int) -> tuple[float, ...]:
        """The transform of the window whose top-left pixel is (row y, column x) of this raster."""
        x0, w, rr, y0, cr, h = self.transform
        return (x0 + x * w + y * rr, w, rr, y0 + x * cr + y * h, cr, h)

    def describe(self) -> str:
        """For messages: "EPSG:32633, origin (523456.789, 5812345.678), pixel 0.3 × -0.3"."""
        x0, w, rr, y0, cr, h = self.transform
        crs = self.crs if len(self.crs) < 40 else self.crs[:37] + "..."
        rotation = f", rotation ({rr:g}, {cr:g})" if rr or cr else ""
        return f"{crs}, origin ({x0:.10g}, {y0:.10g}), pixel {w:g} × {h:g}{rotation}"

    def to_json(self) -> dict:
        return {"crs": self.crs, "transform": list(self.transform)}


def same_grid(a: Grid, b: Grid) -> bool:
    """Whether two rasters' pixels lie on one grid: the same CRS, and transforms within PIXEL_TOLERANCE of a
    pixel (origin) and of its size."""
    if a.crs != b.crs and not _same_crs(a.crs, b.crs):
        return False
    size = max(abs(a.transform[1]), abs(a.transform[5]), 1e-12)
    return all(abs(p - q) <= PIXEL_TOLERANCE * size for p, q in zip(a.transform, b.transform))


def _same_crs(a: str, b: str) -> bool:
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except Exception:  # noqa: BLE001 - a CRS rasterio cannot parse equals only itself
        return False


def pack(transform) -> bytes:
    """A transform as the record's 48 bytes (6 little-endian float64)."""
    return TRANSFORM_BYTES.pack(*transform)


def unpack(data: bytes) -> tuple[float, ...]:
    return TRANSFORM_BYTES.unpack(data)


def _grid(dataset) -> Grid | None:
    """A rasterio dataset's grid; None when it has no CRS (a plain TIFF: rasterio then gives the identity)."""
    if dataset.crs is None:
        return None
    crs = dataset.crs
    epsg = crs.to_epsg()
    text = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    nodata = dataset.nodata
    return Grid(text, tuple(float(v) for v in dataset.transform.to_gdal()),
                None if nodata is None else float(nodata))


def _quiet():
    import logging

    import rasterio

    logging.getLogger("rasterio").setLevel(logging.ERROR)  # "not georeferenced" warnings for plain TIFFs
    return rasterio.Env(CPL_LOG="/dev/null", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR")


def read(data: bytes) -> Grid | None:
    """The grid of a raster file's bytes: a GeoTIFF's, None for PNG, JPEG and TIFFs without georeferencing (or
    whose georeferencing GDAL cannot read). Only the header is read (a MemoryFile would copy the whole file into
    GDAL's memory: a second image-sized buffer for every TIFF decoded whole)."""
    if data[:4] not in TIFF_MAGIC:
        return None
    return read_file(io.BytesIO(data))


def read_file(f) -> Grid | None:
    """The grid of the raster in the seekable binary file object `f` (local or gs://, at any position, which it
    keeps), reading only its header."""
    start = f.tell()
    f.seek(0)
    head = f.read(4)
    f.seek(start)
    if head not in TIFF_MAGIC:
        return None
    import warnings

    import rasterio

    class _View(io.RawIOBase):
        """`f` for GDAL, which opens a file more than once and seeks and closes each handle as it likes: each view
        keeps its own position; `f` itself stays open."""

        def __init__(self):
            super().__init__()
            self.pos = 0

        def readable(self):
            return True

        def seekable(self):
            return True

        def seek(self, offset, whence=0):
            if whence == 2:
                self.pos = f.seek(offset, 2)
            else:
                self.pos = offset + (self.pos if whence == 1 else 0)
            return self.pos

        def tell(self):
            return self.pos

        def readinto(self, buffer):
            f.seek(self.pos)
            data = f.read(len(buffer))
            buffer[:len(data)] = data
            self.pos += len(data)
            return len(data)

    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            with rasterio.open("segprep-header.tif", opener=lambda path, mode="rb": _View()) as dataset:
                return _grid(dataset)
    except (rasterio.errors.RasterioError, ValueError):
        return None
    finally:
        f.seek(start)


def stamp(path: str, grid: Grid) -> None:
    """Gives the local TIFF at `path` the CRS and transform of `grid` (GDAL writes the GeoTIFF tags in place)."""
    import warnings

    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")  # "not georeferenced", said of the file before the stamp
        with rasterio.open(path, "r+") as dataset:
            dataset.crs = CRS.from_user_input(grid.crs)
            dataset.transform = Affine.from_gdal(*grid.transform)


def is_finite(transform) -> bool:
    return all(math.isfinite(v) for v in transform)
