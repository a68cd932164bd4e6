"""The prepare pipeline's shard stages: crops → their shards, by hash → shard files under the run's temp dir.

    (split, (image_id, k, record bytes))  → SpreadCrops  → ((split, shard, n), [(order, image key, bytes)])
                                          → WriteShards  → ShardResult

Both shuffle paths (this one, through Beam's GroupByKey, and pipelines/spill.py, through local spill files) give
each crop its shard and place from the same hashes (`crop_hashes`, `shard_of`) and end in the same `WriteShards`
stage (and `segprep.formats.shards.write_shard`), so they write the same bytes.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from segprep import tiles
from segprep.crops import stable_hash
from segprep.formats.shards import TARGET_SHARD_BYTES, ShardFormat, auto_shard_count, write_shard


class SpreadCrops(beam.PTransform):
    """Gives each crop a shard and a place in it from a hash of (seed, split, id, k), then groups by shard.

    Crops of one image land in random shards at random positions, never side by side, and the result is the
    same whatever the runner, worker count or bundle order. With `num_shards` 0, each split gets
    ceil(bytes / 128 MiB) shards."""

    def __init__(self, seed: int, num_shards: int, target_shard_bytes: int = TARGET_SHARD_BYTES):
        super().__init__()
        self._seed = seed
        self._num_shards = num_shards
        self._target = target_shard_bytes

    def expand(self, crops):
        """(split, (image_id, k, bytes)) → ((split, shard, num_shards), iterable of (order key, image key, bytes)).
        Only shards that get crops appear; `Finalize` writes the empty ones."""
        seed, fixed, target = self._seed, self._num_shards, self._target

        def assign(element, totals=None):
            split, (image_id, k, data) = element
            n = fixed or auto_shard_count(totals[split], target)
            shard_hash, order = crop_hashes(seed, split, image_id, k)
            return (split, shard_of(shard_hash, n), n), ((order, shard_hash), tiles.image_key(split, image_id), data)

        if fixed:  # no side input: assigning fuses into the stage that cuts the crops
            keyed = crops | "Assign" >> beam.Map(assign)
        else:
            sizes = (crops
                     | "Sizes" >> beam.MapTuple(lambda split, c: (split, len(c[2])))
                     | "TotalBytes" >> beam.CombinePerKey(sum))
            keyed = crops | "Assign" >> beam.Map(assign, totals=beam.pvalue.AsDict(sizes))
        return keyed | "GroupByShard" >> beam.GroupByKey()


def crop_hashes(seed: int, split: str, image_id: str, k: int) -> tuple[int, int]:
    """(shard hash, order hash) of crop `k` of `image_id`: 64-bit, the same on every machine."""
    return stable_hash(seed, "shard", split, image_id, k), stable_hash(seed, "order", split, image_id, k)


def shard_of(shard_hash: int, num_shards: int) -> int:
    """The shard of a crop: shard i of n holds the hashes in [i/n, (i+1)/n) of the 64-bit range: a contiguous
    slice, so the spill path (pipelines/spill.py) finds all of a shard in a few buckets."""
    return (shard_hash * num_shards) >> 64


def grouped_records(element, failed: frozenset[int]):
    """What SpreadCrops grouped: ((split, shard, n), [(order, image key, bytes)]) → (split, shard, n, the records in
    order, those of `failed` images left out)."""
    (split, shard, num_shards), records = element
    ordered = (data for _, key, data in sorted(records, key=lambda r: r[0])  # (order, shard hash): as spill
               if key not in failed)
    return split, shard, num_shards, ordered


class _WriteShardFn(beam.DoFn):
    def __init__(self, temp_dir: str, fmt: ShardFormat, records_of):
        self._temp_dir = temp_dir
        self._fmt = fmt
        self._records_of = records_of

    def process(self, element, failed=()):
        split, shard, num_shards, records = self._records_of(element, frozenset(failed))
        result = write_shard(self._temp_dir, self._fmt, split, shard, num_shards, records)
        Metrics.counter("segprep", "crops_written").inc(result.records)
        Metrics.counter("segprep", "bytes_written").inc(result.bytes)
        yield result


class WriteShards(beam.PTransform):
    """Writes each shard, its records in hash order, as a file of `fmt` under the run's temp dir; crops of the
    images in `failed` (a PCollection of `tiles.image_key`s: tiles that failed in some window) are left out.
    `records_of(element, failed)` → (split, shard, n, records in order): `grouped_records` for SpreadCrops' groups,
    `spill.spilled_records` for the spill path's shard tasks."""

    def __init__(self, temp_dir: str, fmt: ShardFormat = ShardFormat(), failed=None, records_of=grouped_records):
        super().__init__()
        self._temp_dir = temp_dir
        self._fmt = fmt
        self._failed = failed
        self._records_of = records_of

    def expand(self, shards):
        """SpreadCrops' groups, or spill's ShardTasks → ShardResult."""
        side = {"failed": beam.pvalue.AsList(self._failed)} if self._failed is not None else {}
        return shards | beam.ParDo(_WriteShardFn(self._temp_dir, self._fmt, self._records_of), **side)
