"""TFRecord files read without TensorFlow: record framing, CRCs, counts (for segprep.verify and inspect).

A TFRecord file is a run of frames: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the
data (little-endian). Gzip-compressed shards (`.tfrecord.gz`) are decompressed on the fly. prepare writes its
shards with `write` and everything reads them with `read`: public APIs only (google_crc32c), no TensorFlow.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Iterator

from segprep import storage


class RecordError(ValueError):
    """A frame that is cut short or whose checksum does not match."""


_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (google_crc32c: the C implementation Beam's GCS client uses too)."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write(f, data: bytes) -> int:
    """Appends one record to the binary file object `f`, framed as TensorFlow frames it; → bytes written."""
    head = _U64.pack(len(data))
    f.write(head + _U32.pack(masked_crc(head)))
    f.write(data)
    f.write(_U32.pack(masked_crc(data)))
    return len(data) + 16


def _size(f) -> int | None:
    """The file's size when it can seek cheaply (local or remote, not gzip), else None."""
    if isinstance(f, gzip.GzipFile):
        return None
    try:
        here = f.tell()
        size = f.seek(0, io.SEEK_END)
        f.seek(here)
        return size
    except (OSError, AttributeError, ValueError):
        return None


def read(path: str, check: bool = True, skip_data: bool = False) -> Iterator[tuple[int, bytes | None]]:
    """(record number, data) for each record of a shard. Every length checksum is checked, so a corrupt length is
    a RecordError, never an attempt to read gigabytes. `check` also checks the data checksums; `skip_data` reads
    the framing only (data is None) and seeks over the record bodies where the file can seek (uncompressed
    shards). Raises RecordError naming the record number where the file stops being a valid TFRecord file."""
    with storage.open_read(path, gzip=path.endswith(".gz")) as f:
        size = _size(f)
        pos = 0
        index = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise RecordError(f"record {index}: cut short in its header ({len(head)} of 12 bytes)")
            length, length_crc = struct.unpack("<QI", head)
            if masked_crc(head[:8]) != length_crc:
                raise RecordError(f"record {index}: length checksum mismatch (not a TFRecord file, or corrupt)")
            pos += 12
            if size is not None and pos + length + 4 > size:
                raise RecordError(f"record {index}: cut short ({size - pos} of {length + 4} bytes)")
            if skip_data and size is not None:
                pos = f.seek(length + 4, io.SEEK_CUR)
                yield index, None
                index += 1
                continue
            body = f.read(length + 4)
            if len(body) < length + 4:
                raise RecordError(f"record {index}: cut short ({len(body)} of {length + 4} bytes)")
            pos += length + 4
            data = body[:length]
            if check and not skip_data and masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                raise RecordError(f"record {index}: data checksum mismatch")
            yield index, (None if skip_data else data)
            index += 1
