"""Shard files: their names, their sizes, and the one function that writes a shard (both shuffle paths of prepare
end in it), plus the temp dir a run writes them in before they are moved into place.

    OUT/{split}-{shard:05d}-of-{num_shards:05d}.tfrecord[.gz]     exactly num_shards files per split
    OUT/{split}-{shard:05d}-of-{num_shards:05d}.array_record      the same, with --file_format array_record
    OUT/.segprep-tmp-RUN/                                         a run's shards until they are moved into place

Readers take shard names from metadata.json, never from a glob (`shard_pattern` is for messages and tools).
"""

from __future__ import annotations

import dataclasses
import math
import re

from segprep import layout, storage
from segprep.formats import array_record, tfrecord

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<shard>\d{5})-of-(?P<num>\d{5})\.(tfrecord(\.gz)?|array_record)$")
FILE_FORMATS = ("tfrecord", "array_record")  # prepare --file_format
TARGET_SHARD_BYTES = 128 << 20  # automatic shard count: ~128 MiB a shard

TEMP_PREFIX = ".segprep-tmp-"  # OUT/.segprep-tmp-RUN/: a run's shards until they are moved into place
TEMP_MARKER = ".segprep-run.json"  # in each run's temp dir, written first: this folder is segprep's
TEMP_JOURNAL = ".segprep-moves.json"  # in a temp dir, written before a run moves files into OUT: what they will be


@dataclasses.dataclass(frozen=True)
class ShardFormat:
    """How a run's shards are stored: TFRecord (gzipped with --compress) or ArrayRecord. The records are the same
    serialized bytes in the same order either way."""

    file_format: str = "tfrecord"  # one of FILE_FORMATS
    compressed: bool = False  # gzip: TFRecord only

    def __post_init__(self):
        if self.file_format not in FILE_FORMATS:
            raise ValueError(f"file format {self.file_format!r}: one of {', '.join(FILE_FORMATS)}")
        if self.compressed and self.file_format != "tfrecord":
            raise ValueError("only TFRecord shards are gzipped")

    @property
    def suffix(self) -> str:
        if self.file_format == "array_record":
            return array_record.SUFFIX
        return ".tfrecord" + (".gz" if self.compressed else "")

    def name(self, split: str, shard: int, num_shards: int) -> str:
        return f"{split}-{shard:05d}-of-{num_shards:05d}{self.suffix}"

    def write(self, path: str, serialized) -> tuple[int, int]:
        """Writes the `serialized` records, in the order given, as one shard at `path`; → (records, data bytes).
        No records: an empty shard that still opens as one."""
        if self.file_format == "array_record":
            return array_record.write(path, serialized)
        count = size = 0
        with storage.create(path, gzip=self.compressed) as f:
            for data in serialized:
                tfrecord.write(f, data)
                count += 1
                size += len(data)
        return count, size


def shard_name(split: str, shard: int, num_shards: int, compressed: bool = False) -> str:
    return ShardFormat(compressed=compressed).name(split, shard, num_shards)


def shard_pattern(split: str) -> str:
    """A glob for any shard count of `split`: readers must still take names from metadata.json, never from it."""
    return f"{split}-?????-of-?????.*record*"


def read(path: str, check: bool = True, skip_data: bool = False, files=storage.BEAM):
    """(record number, data) of each record of a shard of either format, by its name (see `tfrecord.read`)."""
    if path.endswith(array_record.SUFFIX):
        return array_record.read(path, skip_data=skip_data, files=files)
    return tfrecord.read(path, check=check, skip_data=skip_data)


def is_shard(name: str) -> bool:
    return SHARD_RE.match(name.rsplit("/", 1)[-1]) is not None


def auto_shard_count(total_bytes: int, target_bytes: int = TARGET_SHARD_BYTES) -> int:
    """Shards for a split of `total_bytes` of records: ceil(total / target), at least 1."""
    return max(1, math.ceil(total_bytes / target_bytes))


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """A shard written under the run's temp dir."""

    split: str
    shard: int
    num_shards: int
    name: str
    temp_path: str
    records: int
    bytes: int


def write_shard(temp_dir: str, fmt: ShardFormat, split: str, shard: int, num_shards: int, serialized) -> ShardResult:
    """Writes the `serialized` records, in the order given, as one shard under the run's temp dir."""
    name = fmt.name(split, shard, num_shards)
    path = layout.join(temp_dir, name)
    count, size = fmt.write(path, serialized)
    return ShardResult(split, shard, num_shards, name, path, count, size)
