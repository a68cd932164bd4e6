"""Shuffling crops into shards through local spill files: memory flat in the dataset size on one machine.

The DirectRunner keeps every PCollection that crosses a stage boundary, and every GroupByKey, in Python lists: a
dataset's crops would all sit in memory before the first shard is written. Here the crops never cross a stage
boundary. The stage that cuts them appends each one to a local file picked by the top bits of its shard hash
(a *bucket*, one file per bucket per bundle) and passes on only a small `SpillRef` per file. A writer then
makes one shard at a time: it reads the frame headers of the buckets that overlap the shard's hash range, keeps
(order, where) of the shard's records — 30 bytes each — sorts them and copies the records into the shard. Memory
is one bundle's open files plus one shard's index, whatever the dataset size; disk use is the records once more.

Shard and order come from the same hashes as `SpreadCrops` (the Beam-shuffle path), and a shard's hash range is
the same contiguous slice (`shard_of`), so both paths write byte-identical shards for a seed, on any worker count.

The spill files must be readable by the process that writes the shards: this path is for runners whose workers
share one machine's disk (DirectRunner, FnApiRunner, PrismRunner with local workers). On Dataflow, Flink or Spark
the Beam shuffle path is used; prepare's --shuffle flag picks.
"""

from __future__ import annotations

import array
import dataclasses
import errno
import os
import struct
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from pipelines.shards import crop_hashes, shard_of
from segprep.formats.shards import TARGET_SHARD_BYTES, auto_shard_count
from segprep.tiles import image_key

BUCKET_BITS = 6  # 64 buckets: a shard reads about 64 / num_shards files per bundle, each once
_FRAME = struct.Struct("<QQQI")  # shard hash, order hash, image key, record length; then the record


def bucket_of(shard_hash: int) -> int:
    return shard_hash >> (64 - BUCKET_BITS)


def shard_buckets(shard: int, num_shards: int) -> range:
    """The buckets that hold any hash of `shard`'s slice."""
    lo = -(-(shard << 64) // num_shards)  # the smallest hash h with shard_of(h) == shard
    hi = -(-((shard + 1) << 64) // num_shards) - 1  # the largest
    return range(bucket_of(lo), bucket_of(hi) + 1)


@dataclasses.dataclass(frozen=True)
class SpillRef:
    """One spill file: the records of one split whose shard hash falls in `bucket`, from one bundle."""

    split: str
    bucket: int
    path: str
    records: int
    bytes: int  # record bytes, frames excluded: what the shards will hold


class _SpillFn(beam.DoFn):
    def __init__(self, spill_dir: str, seed: int):
        self._dir = spill_dir
        self._seed = seed

    def start_bundle(self):
        self._bundle = uuid.uuid4().hex[:16]
        self._files = {}  # (split, bucket) → [file, path, records, bytes]

    def process(self, element):
        split, (image_id, k, data) = element
        shard_hash, order = crop_hashes(self._seed, split, image_id, k)
        image = image_key(split, image_id)
        key = split, bucket_of(shard_hash)
        entry = self._files.get(key)
        path = entry[1] if entry else os.path.join(self._dir, f"{self._bundle}-{len(self._files):04d}.spill")
        try:
            if entry is None:
                # Unbuffered: a crop is tens of KB, and 64 buckets' buffers would be 64 × the buffer size of memory.
                entry = self._files[key] = [open(path, "wb", buffering=0), path, 0, 0]
            # Header and record in one system call, without copying the record into a new buffer.
            written = os.writev(entry[0].fileno(), (_FRAME.pack(shard_hash, order, image, len(data)), data))
            if written != _FRAME.size + len(data):  # a regular file takes less only when the disk is full
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (wrote {written} of "
                                            f"{_FRAME.size + len(data)} bytes)")
        except OSError as e:
            raise OSError(e.errno, f"cannot write the spill file {path} ({e.strerror}): spill files need about "
                                   "the output's size of free disk until the shards are written; free some, or "
                                   "pass --spill_dir on a larger disk") from e
        entry[2] += 1
        entry[3] += len(data)

    def finish_bundle(self):
        files, self._files = self._files, {}
        for (split, bucket), (f, path, records, size) in sorted(files.items()):
            f.close()
            yield GlobalWindows.windowed_value((split, SpillRef(split, bucket, path, records, size)))

    def teardown(self):
        for f, *_ in getattr(self, "_files", {}).values():  # a failed bundle: its files are never referenced
            f.close()


class SpillCrops(beam.PTransform):
    """Appends each crop to a local spill file of its split and bucket; → (split, SpillRef) per file. Fuses into
    the stage that cuts the crops, so no crop crosses a stage boundary."""

    def __init__(self, spill_dir: str, seed: int):
        super().__init__()
        self._dir = spill_dir
        self._seed = seed

    def expand(self, crops):
        """(split, (image_id, k, bytes)) → (split, SpillRef)."""
        return crops | beam.ParDo(_SpillFn(self._dir, self._seed))


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    shard: int
    num_shards: int
    refs: tuple[SpillRef, ...]  # the spill files that may hold records of this shard


def plan_shards(split: str, refs, num_shards: int, target_bytes: int = TARGET_SHARD_BYTES) -> list[ShardTask]:
    """One task per shard that may get records: `num_shards`, or ceil(total bytes / target) when 0."""
    refs = sorted(refs, key=lambda r: r.path)
    n = num_shards or auto_shard_count(sum(r.bytes for r in refs), target_bytes)
    by_bucket: dict[int, list[SpillRef]] = {}
    for ref in refs:
        by_bucket.setdefault(ref.bucket, []).append(ref)
    tasks = []
    for shard in range(n):
        overlapping = tuple(r for b in shard_buckets(shard, n) for r in by_bucket.get(b, ()))
        if overlapping:
            tasks.append(ShardTask(split, shard, n, overlapping))
    return tasks


class PlanShards(beam.PTransform):
    """Groups the spill files by split and plans its shards: --num_shards, or one per ~128 MiB of records."""

    def __init__(self, num_shards: int, target_bytes: int = TARGET_SHARD_BYTES):
        super().__init__()
        self._num_shards = num_shards
        self._target = target_bytes

    def expand(self, refs):
        """(split, SpillRef) → ShardTask, spread over workers."""
        n, target = self._num_shards, self._target
        return (refs
                | "RefsBySplit" >> beam.GroupByKey()
                | "Plan" >> beam.FlatMapTuple(lambda split, rs: plan_shards(split, rs, n, target))
                | "SpreadTasks" >> beam.Reshuffle())


def read_shard(task: ShardTask, failed: frozenset[int] = frozenset()):
    """→ the records of `task`'s shard in order, read from its spill files: first an index of the shard's records
    (order, hash, file, offset, length: 30 bytes each in typed arrays, so even a shard of millions of crops indexes
    in tens of MB), then the records by offset. Records of the images whose `image_key` is in `failed` are left
    out."""
    orders, hashes, offsets = array.array("Q"), array.array("Q"), array.array("Q")
    lengths, files_of = array.array("I"), array.array("H")
    for i, ref in enumerate(task.refs):
        with open(ref.path, "rb", buffering=0) as f:  # unbuffered: a seek would throw a read buffer away
            offset, head = 0, _FRAME.size
            while True:
                frame = f.read(head)
                if not frame:
                    break
                if len(frame) < head:
                    raise OSError(f"spill file {ref.path} is cut short at byte {offset}")
                shard_hash, order, image, length = _FRAME.unpack(frame)
                if shard_of(shard_hash, task.num_shards) == task.shard and image not in failed:
                    orders.append(order)
                    hashes.append(shard_hash)
                    offsets.append(offset + head)
                    lengths.append(length)
                    files_of.append(i)
                offset += head + length
                f.seek(offset)
    # By order hash, then shard hash: as SpreadCrops sorts on the Beam path.
    ranking = np.lexsort((np.frombuffer(hashes, np.uint64), np.frombuffer(orders, np.uint64))) if orders else []
    files = {}
    try:
        for k in ranking:
            i, offset, length = files_of[k], offsets[k], lengths[k]
            f = files.get(i) or files.setdefault(i, open(task.refs[i].path, "rb", buffering=0))
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise OSError(f"spill file {task.refs[i].path} is cut short at byte {offset + len(data)}")
            yield data
    finally:
        for f in files.values():
            f.close()


def spilled_records(task: ShardTask, failed: frozenset[int]):
    """A planned shard → (split, shard, n, its records in order, read from the spill files): what
    `pipelines.shards.WriteShards` writes on this path."""
    return task.split, task.shard, task.num_shards, read_shard(task, failed)
