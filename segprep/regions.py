"""Regions of a tiled or stripped TIFF, read without reading the rest of the file.

A TIFF stores its first page as segments (tiles, or strips of rows), each compressed on its own, with their file
offsets in the header. `TiffRegions.read(y0, y1, x0, x1)` reads and decodes only the segments that region touches
(through tifffile's and imagecodecs' decoders, as `codec` does for whole files) and returns the region's samples in
the layout `codec` expects of a whole page: (H, W) or (H, W, samples), planar files included. Memory is the region
plus one segment, whatever the file's size, so a 40,000² orthomosaic is cut window by window
(`pipelines/windows.py`).

The file object must be seekable; it may be a local file or a remote one (gs://) opened through `storage`: only
the header and the touched segments are fetched.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os

import numpy as np

from segprep.codec import DecodeError, Tiff


_BATCH = 64  # segments read before they are decoded


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """One decoding pool a process for each size (threads are made as they are needed, and live with it); a
    forked child makes its own, as the parent's threads do not exist there."""
    return _pool_of(workers, os.getpid())


@functools.lru_cache(maxsize=4)
def _pool_of(workers: int, pid: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="segprep-tiff")


class TiffRegions:
    """The first page of the TIFF in the seekable binary file object `f`, opened for region reads. Raises
    `DecodeError` for a file that is not such a TIFF, whose tags declare more data than the file holds (a
    truncated file), or whose layout cannot be read by region (`region_readable` says why not)."""

    def __init__(self, f, size: int | None = None):
        import tifffile

        self._f = f
        if size is None:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
        try:
            self._tif = tifffile.TiffFile(f)
            page = self._tif.pages[0]
            self._page = page
            self.height, self.width = int(page.imagelength), int(page.imagewidth)
            self.samples = int(page.samplesperpixel)
            self.dtype = np.dtype(page.dtype) if page.dtype is not None else None
            self.photometric = int(page.photometric)
            self.colormap = page.colormap
            from segprep.codec import tiff_nodata

            self.nodata = tiff_nodata(page)  # GDAL_NODATA, or None
            extras = [int(e) for e in (page.extrasamples or ())]
            self._offsets = np.asarray(page.dataoffsets, np.int64)
            self._counts = np.asarray(page.databytecounts, np.int64)
            tiled = bool(page.is_tiled)
            self.planar = self.samples > 1 and int(page.planarconfig) == 2
            self._tiled = tiled
            depth = int(getattr(page, "imagedepth", 1) or 1)
            bits = int(page.bitspersample)
            if tiled:
                self._seg_h, self._seg_w = int(page.tilelength), int(page.tilewidth)
            else:
                self._seg_h, self._seg_w = min(int(page.rowsperstrip or self.height), self.height), self.width
            self._kwargs = {"_fullsize": tiled}
            if int(page.compression) in (6, 7, 34892, 33007):  # JPEG: tables live in the header
                self._kwargs.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)
            self._decode = page.decode
            self._workers = int(page.maxworkers or 1)  # tifffile's own choice for decoding this page's segments
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - tifffile raises many kinds for a bad file
            raise DecodeError(f"corrupt TIFF: {type(e).__name__}: {e}") from None
        self.alpha = None
        first_extra = self.samples - len(extras)
        for i, kind in enumerate(extras):
            if kind in (1, 2):  # associated or unassociated alpha
                self.alpha = first_extra + i
                break
        ends = self._offsets + self._counts
        ends = ends[self._counts > 0]
        if ends.size and int(ends.max()) > size:
            raise DecodeError(f"truncated TIFF: its tags declare image data up to byte {int(ends.max()):,} but the "
                              f"file has {size:,} bytes")
        self._rows = math.ceil(self.height / self._seg_h) if self.height else 0
        self._cols = math.ceil(self.width / self._seg_w) if self.width else 0
        self.problem = None  # why this file cannot be read by region, if it cannot
        if depth != 1:
            self.problem = f"a volume of depth {depth}"
        elif bits == 1 or self.dtype is None:
            self.problem = "1-bit samples"
        elif self.photometric == 6 and int(page.compression) not in (6, 7):
            self.problem = "YCbCr samples outside JPEG compression"
        elif len(self._offsets) != self._rows * self._cols * (self.samples if self.planar else 1):
            self.problem = f"{len(self._offsets)} segments where its tags imply {self._rows * self._cols}"

    @property
    def region_readable(self) -> bool:
        return self.problem is None

    def tiff(self, array: np.ndarray) -> Tiff:
        """A decoded region with this page's description, as `codec` takes whole pages."""
        return Tiff(array, self.photometric, self.alpha, self.colormap)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Samples of rows y0..y1-1 and columns x0..x1-1 (clipped to the image): (h, w) for one sample a pixel,
        (h, w, samples) otherwise."""
        if self.problem:
            raise DecodeError(f"TIFF cannot be read by region: {self.problem}")
        y0, y1 = max(0, y0), min(self.height, y1)
        x0, x1 = max(0, x0), min(self.width, x1)
        planes = self.samples if self.planar else 1
        per_pixel = 1 if self.planar else self.samples
        out = np.zeros((planes, max(0, y1 - y0), max(0, x1 - x0), per_pixel), self.dtype)
        if y1 <= y0 or x1 <= x0:
            return self._shape(out)
        rows = range(y0 // self._seg_h, (y1 - 1) // self._seg_h + 1)
        cols = range(x0 // self._seg_w, (x1 - 1) // self._seg_w + 1)
        indices = [plane * self._rows * self._cols + r * self._cols + c
                   for plane in range(planes) for r in rows for c in cols]
        # Segments are read in file order, a batch at a time, and decoded on `workers` threads as tifffile decodes a
        # whole page (the codecs release the GIL): memory is a batch of encoded segments plus the region.
        for start in range(0, len(indices), _BATCH):
            batch = sorted(indices[start:start + _BATCH], key=lambda i: self._offsets[i])
            encoded = [(self._segment(i), i) for i in batch]
            if self._workers > 1 and len(batch) > 1:
                decoded = _pool(self._workers).map(self._decode_one, encoded)
            else:
                decoded = map(self._decode_one, encoded)
            for result in decoded:
                self._place(out, result, y0, y1, x0, x1)
        return self._shape(out)

    def _segment(self, index: int) -> bytes | None:
        count = int(self._counts[index])
        if not count:
            return None
        self._f.seek(int(self._offsets[index]))
        data = self._f.read(count)
        if len(data) != count:
            raise DecodeError(f"truncated TIFF: segment {index} ends past the end of the file")
        return data

    def _decode_one(self, item):
        data, index = item
        try:
            return self._decode(data, index, **self._kwargs)
        except Exception as e:  # noqa: BLE001 - a codec error in one segment is this file's fault
            raise DecodeError(f"corrupt TIFF: segment {index}: {type(e).__name__}: {e}") from None

    def _place(self, out: np.ndarray, result, y0: int, y1: int, x0: int, x1: int) -> None:
        segment, (s, _, sy, sx, _), _ = result
        if segment is None:  # an empty segment: zeros, as tifffile reads it
            return
        segment = segment[0]  # (h, w, samples) of the segment, depth 1
        top, left = max(y0, sy), max(x0, sx)
        bottom, right = min(y1, sy + segment.shape[0], self.height), min(x1, sx + segment.shape[1], self.width)
        if bottom <= top or right <= left:
            return
        plane = s if self.planar else 0
        out[plane, top - y0:bottom - y0, left - x0:right - x0] = segment[top - sy:bottom - sy, left - sx:right - sx]

    def _shape(self, out: np.ndarray) -> np.ndarray:
        if self.planar:
            return np.ascontiguousarray(np.moveaxis(out[..., 0], 0, -1))
        out = out[0]
        return out[..., 0] if out.shape[2] == 1 else out

    @property
    def file(self):
        """The file object it reads (closed by `close`)."""
        return self._f

    def close(self) -> None:
        """Closes the TIFF and its file object."""
        self._tif.close()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
