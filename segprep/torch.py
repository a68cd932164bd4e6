"""PyTorch datasets over prepare's output, without TensorFlow (`pip install segprep[torch]`).

    from torch.utils.data import DataLoader
    import segprep.torch

    train = segprep.torch.dataset("data/records", "train", shuffle=True, seed=0)
    for epoch in range(10):
        train.set_epoch(epoch)                      # a new order each epoch, a function of (seed, epoch)
        for batch in DataLoader(train, batch_size=16, num_workers=2):
            batch["image"]                          # uint8 [N, 3, H, W], RGB
            batch["mask"]                           # int64 [N, H, W], class ids, 255 = ignore

`dataset` gives, by the run's --file_format:
- ArrayRecord shards: a map-style `torch.utils.data.Dataset` (`ArrayRecordCrops`): any record by its number, so
  DataLoader's own shuffle=True / samplers / DistributedSampler work too.
- TFRecord shards (gzipped ones too): an `IterableDataset` (`TFRecordCrops`): read in sequence, the shards split
  across DataLoader workers (or, with fewer shards than workers, their records), shuffled through a buffer when
  `shuffle`.

Each item is a dict: "image" uint8 [3, H, W] RGB, "mask" int64 [H, W], "id" (the source image's id), "offset"
(y, x) of the crop in its source; each extra input by its name, float32 [C, H, W] (values as stored: a uint16 band
stays 0..65535, a DSM in metres; no data is the value metadata.json's extra_inputs.NAME.nodata names); and when the
split's sources are georeferenced, "crs" (str, "" for a crop without) and "transform" (float64 [6], GDAL order,
the crop's own; NaN for a crop without).

Records are parsed by protobuf and decoded by OpenCV (`segprep.examples`, which a JAX or NumPy reader can use too):
the same pixels as the trainer's tf.data decoding (tested), and `tensorflow` is never imported.
"""

from __future__ import annotations

import bisect
import random

import numpy as np
import torch
import torch.utils.data

from segprep import examples, storage
from segprep.crops import stable_hash
from segprep.formats import array_record, metadata, records, tfrecord



class ReadError(ValueError):
    """A data dir that is not prepare's output, or a split it does not hold."""


def dataset(data_dir: str, split: str = "train", shuffle: bool = False, seed: int = 0,
            inputs: list[str] | None = None, shuffle_buffer: int = 1024, mask_dtype: torch.dtype = torch.int64):
    """The crops of `split` in prepare's output `data_dir` (local, or gs:// for TFRecord shards) as a PyTorch
    dataset: map-style over ArrayRecord shards, iterable over TFRecord shards (see the module docstring).
    `inputs`: the extra inputs to load (default: every one the run wrote; [] for none). `shuffle`: a new order
    each epoch drawn from (`seed`, epoch) — call `set_epoch(e)` before each epoch, as with DistributedSampler.
    `mask_dtype`: int64 (what losses take) by default; torch.uint8 moves 8× fewer bytes between DataLoader workers
    and to the GPU (call .long() there): `./dev bench read` measures both."""
    meta = _metadata(data_dir)
    try:
        entry = meta.split(split)
    except metadata.MetadataError as e:
        raise ReadError(str(e)) from None
    names = list(meta.extra_inputs) if inputs is None else list(inputs)
    unknown = [n for n in names if n not in meta.extra_inputs]
    if unknown:
        raise ReadError(f"{data_dir} holds no extra input {unknown[0]!r}; it holds: "
                        f"{', '.join(meta.extra_inputs) or 'none'}")
    decoder = Decoder(tuple(names), georeferenced=entry.georeferenced > 0, mask_dtype=mask_dtype)
    paths = meta.shard_paths(data_dir.rstrip("/"), split)
    counts = list(entry.shard_records)
    if meta.file_format == "array_record":
        remote = [p for p in paths if storage.is_remote(p)]
        if remote:
            raise ReadError(f"{remote[0]}: ArrayRecord shards are read at random from local files; copy the "
                            f"folder first (gsutil -m cp -r {data_dir} .)")
        return ArrayRecordCrops(paths, counts, decoder, shuffle, seed)
    return TFRecordCrops(paths, counts, decoder, shuffle, seed, shuffle_buffer)


def _metadata(data_dir: str) -> metadata.Metadata:
    path = metadata.metadata_path(data_dir.rstrip("/"))
    try:
        data = storage.read_bytes(path)
    except (OSError, FileNotFoundError):
        raise ReadError(f"No {path}: {data_dir} is not prepare's output (make it with `python -m "
                        f"pipelines.prepare --output_dir {data_dir}`)") from None
    try:
        return metadata.parse(data, path)
    except metadata.MetadataError as e:
        raise ReadError(str(e)) from None


class Decoder:
    """A serialized crop record → the item dict (see the module docstring), from `segprep.examples.decode`'s
    arrays. Picklable: it travels to workers."""

    def __init__(self, extras: tuple[str, ...] = (), georeferenced: bool = False,
                 mask_dtype: torch.dtype = torch.int64):
        self.extras = extras
        self.georeferenced = georeferenced
        self.mask_dtype = mask_dtype

    def __call__(self, data: bytes) -> dict:
        item = examples.decode(data, self.extras, self.georeferenced)
        item["image"] = _channels_first(item["image"])
        item["mask"] = torch.from_numpy(item["mask"]).to(self.mask_dtype)
        for name in self.extras:
            item[name] = _channels_first(item[name])
        if self.georeferenced:
            item["transform"] = torch.from_numpy(item["transform"])
        return item


def _channels_first(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _order_rng(seed: int, *key) -> random.Random:
    """A generator for the order of one epoch: a pure function of the seed and `key`, the same on every machine."""
    return random.Random(stable_hash(seed, *key))


class ArrayRecordCrops(torch.utils.data.Dataset):
    """Map-style: item i is record i of the split (shards in order), or, with `shuffle`, record perm[i] for a
    permutation drawn from (seed, epoch). Readers open lazily in each process that reads (DataLoader workers
    included) and are never pickled."""

    def __init__(self, paths: list[str], counts: list[int], decode: Decoder, shuffle: bool = False, seed: int = 0):
        self.paths, self.counts, self.decode = list(paths), list(counts), decode
        self.starts = [0]
        for n in counts:
            self.starts.append(self.starts[-1] + n)
        self.shuffle, self.seed = shuffle, seed
        self._readers: dict[int, object] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = None
        if self.shuffle:
            order = list(range(len(self)))
            _order_rng(self.seed, "torch-order", epoch).shuffle(order)
            self._order = order

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state

    def _locate(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        index %= len(self)
        if self._order is not None:
            index = self._order[index]
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _reader(self, shard: int):
        reader = self._readers.get(shard)
        if reader is None:
            try:
                reader = array_record.open_reader(self.paths[shard], array_record.READ_RANDOM)
            except tfrecord.RecordError as e:
                raise tfrecord.RecordError(f"{self.paths[shard]}: {e} (`python -m segprep.verify` checks "
                                           "every shard)") from None
            self._readers[shard] = reader
        return reader

    def raw(self, indices: list[int]) -> list[bytes]:
        """The serialized records at `indices`, read shard by shard, in the order asked."""
        where = [self._locate(i) for i in indices]
        out: list[bytes | None] = [None] * len(where)
        by_shard: dict[int, list[int]] = {}
        for k, (shard, _) in enumerate(where):
            by_shard.setdefault(shard, []).append(k)
        for shard, ks in by_shard.items():
            for k, data in zip(ks, self._reader(shard).read([where[k][1] for k in ks])):
                out[k] = data
        return out

    def __getitem__(self, index: int) -> dict:
        return self.decode(self.raw([index])[0])

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch at once (DataLoader's batched fetch): one read a shard."""
        return [self.decode(data) for data in self.raw(list(indices))]


class TFRecordCrops(torch.utils.data.IterableDataset):
    """Iterable: the split's records in shard order, or, with `shuffle`, the shards in an order drawn from
    (seed, epoch) and the records through a `shuffle_buffer` drawn the same way. Split across DataLoader workers:
    by shard when there are at least as many shards as workers, else by record (each worker decodes its share)."""

    def __init__(self, paths: list[str], counts: list[int], decode: Decoder, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer: int = 1024):
        self.paths, self.counts, self.decode = list(paths), list(counts), decode
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, shuffle_buffer
        self.epoch: int | None = None
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        """The order of the next passes: a function of (seed, epoch) only, in every worker."""
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.counts)

    def _key(self, info) -> tuple:
        """The epoch's key: set_epoch's epoch; without it, this object's pass count and, in a DataLoader worker,
        the loader's base seed (new each epoch, the same in every worker)."""
        if self.epoch is not None:
            return ("epoch", self.epoch)
        self._passes += 1
        return ("pass", self._passes, (info.seed - info.id) if info is not None else 0)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        key = self._key(info)
        order = list(range(len(self.paths)))
        if self.shuffle:
            _order_rng(self.seed, "torch-shards", *key).shuffle(order)
        by_shard = len(order) >= workers
        mine = order[worker::workers] if by_shard else order
        stream = self._serialized(mine, None if by_shard else (worker, workers))
        if self.shuffle:
            stream = _buffered(stream, self.shuffle_buffer, _order_rng(self.seed, "torch-buffer", *key, worker))
        for data in stream:
            yield self.decode(data)

    def _serialized(self, shard_order: list[int], share: tuple[int, int] | None):
        n = 0
        for shard in shard_order:
            try:
                for _, data in tfrecord.read(self.paths[shard]):
                    if share is None or n % share[1] == share[0]:
                        yield data
                    n += 1
            except tfrecord.RecordError as e:
                raise tfrecord.RecordError(f"{self.paths[shard]}: {e} (`python -m segprep.verify` checks "
                                           "every shard)") from None


def _buffered(stream, size: int, rng: random.Random):
    """A shuffle through a buffer of `size` items, as tf.data's: each item out is a random one of the buffer."""
    buffer = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = rng.randrange(size)
        buffer[k], item = item, buffer[k]
        yield item
    rng.shuffle(buffer)
    yield from buffer
