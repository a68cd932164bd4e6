"""TFRecord files read without TensorFlow: record framing, CRCs, counts (for segprep.verify and inspect).

A TFRecord file is a run of frames: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the
data (little-endian). Gzip-compressed shards (`.tfrecord.gz`) are decompressed on the fly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from segprep import storage


class RecordError(ValueError):
    """A frame that is cut short or whose checksum does not match."""


def _masked_crc(data: bytes) -> int:
    from apache_beam.io.tfrecordio import _TFRecordUtil

    return _TFRecordUtil._masked_crc32c(data)


def read(path: str, check: bool = True, skip_data: bool = False) -> Iterator[tuple[int, bytes | None]]:
    """(record number, data) for each record of a shard; `skip_data` reads the framing only (data is None).
    Raises RecordError naming the record number where the file stops being a valid TFRecord file."""
    with storage.open_read(path, gzip=path.endswith(".gz")) as f:
        index = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise RecordError(f"record {index}: cut short in its header ({len(head)} of 12 bytes)")
            length, length_crc = struct.unpack("<QI", head)
            if check and _masked_crc(head[:8]) != length_crc:
                raise RecordError(f"record {index}: length checksum mismatch (not a TFRecord file, or corrupt)")
            body = f.read(length + 4)
            if len(body) < length + 4:
                raise RecordError(f"record {index}: cut short ({len(body)} of {length + 4} bytes)")
            data = body[:length]
            if check and not skip_data and _masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                raise RecordError(f"record {index}: data checksum mismatch")
            yield index, (None if skip_data else data)
            index += 1
