"""Shard files: their names, their sizes, and the one function that writes a shard (both shuffle paths of prepare
end in it), plus the temp dir a run writes them in before they are moved into place.

    OUT/{split}-{shard:05d}-of-{num_shards:05d}.tfrecord[.gz]     exactly num_shards files per split
    OUT/.segprep-tmp-RUN/                                         a run's shards until they are moved into place

Readers take shard names from metadata.json, never from a glob (`shard_pattern` is for messages and tools).
"""

from __future__ import annotations

import dataclasses
import math
import re

from segprep import layout, storage
from segprep.formats import tfrecord

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<shard>\d{5})-of-(?P<num>\d{5})\.tfrecord(\.gz)?$")
TARGET_SHARD_BYTES = 128 << 20  # automatic shard count: ~128 MiB a shard

TEMP_PREFIX = ".segprep-tmp-"  # OUT/.segprep-tmp-RUN/: a run's shards until they are moved into place
TEMP_MARKER = ".segprep-run.json"  # in each run's temp dir, written first: this folder is segprep's
TEMP_JOURNAL = ".segprep-moves.json"  # in a temp dir, written before a run moves files into OUT: what they will be


def shard_name(split: str, shard: int, num_shards: int, compressed: bool = False) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord" + (".gz" if compressed else "")


def shard_pattern(split: str) -> str:
    """A glob for any shard count of `split`: readers must still take names from metadata.json, never from it."""
    return f"{split}-?????-of-?????.tfrecord*"


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


def write_shard(temp_dir: str, compressed: bool, split: str, shard: int, num_shards: int, serialized) -> ShardResult:
    """Writes the `serialized` records, in the order given, as one TFRecord shard under the run's temp dir."""
    name = shard_name(split, shard, num_shards, compressed)
    path = layout.join(temp_dir, name)
    count = size = 0
    with storage.create(path, gzip=compressed) as f:
        for data in serialized:
            tfrecord.write(f, data)
            count += 1
            size += len(data)
    return ShardResult(split, shard, num_shards, name, path, count, size)
