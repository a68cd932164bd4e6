"""ArrayRecord shards (`prepare --file_format array_record`): the TFRecord shards' serialized `tf.train.Example`s,
the same bytes in the same order, in Google's ArrayRecord container (the `array-record` package, Riegeli inside),
which reads any record by its number: TFDS's `as_data_source`, Grain and `segprep.torch`'s map-style dataset.

Written with `group_size:1` and no compression (`OPTIONS`):
- group size 1 (one record a chunk) is what random access wants: reading record i decodes record i only. It is
  what TFDS writes and what ArrayRecord's own data source asks for (it warns on any other). Larger groups read
  sequentially faster when records are small (google/array_record#143); a crop record is ~25-250 KiB, so a chunk
  of one is already large, and `./dev bench read` measures both (group 1 vs 64, sequential and random).
- no compression: a record is JPEG/PNG/zlib bytes already; a general-purpose codec over them buys little and
  every random read would pay for it.

ArrayRecord's reader and writer use local files only: a shard for a remote output dir (gs://) is written to a
local temp file and copied into place; a remote shard is read from a local copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from segprep import storage
from segprep.formats.tfrecord import RecordError

SUFFIX = ".array_record"
OPTIONS = "group_size:1,uncompressed"
READ_RANDOM = "readahead_buffer_size:0,max_parallelism:0"  # ArrayRecord's advice for random access
_BATCH = 64  # records read a call on a sequential pass


def _module():
    from array_record.python import array_record_module

    return array_record_module


def write(path: str, serialized: Iterable[bytes], options: str = OPTIONS) -> tuple[int, int]:
    """Writes `serialized` records, in order, as an ArrayRecord file at `path` (local or remote);
    → (records, bytes of record data)."""
    if storage.is_remote(path):
        with _local_temp() as local:
            result = write(local, serialized, options)
            storage.copy(local, path)
            return result
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = _module().ArrayRecordWriter(path, options)
    count = size = 0
    try:
        for data in serialized:
            writer.write(data)
            count += 1
            size += len(data)
    finally:
        writer.close()
    return count, size


@contextlib.contextmanager
def _local_temp():
    folder = tempfile.mkdtemp(prefix="segprep-array-record-")
    try:
        yield os.path.join(folder, "shard" + SUFFIX)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_file(path: str, files=storage.BEAM):
    """`path` as a local file ArrayRecord can open: itself, or a temp copy of a remote one (through `files`, a
    storage backend) removed afterwards."""
    if not storage.is_remote(path):
        yield path
        return
    with _local_temp() as local:
        with files.open_read(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


def open_reader(path: str, options: str = ""):
    """ArrayRecord's reader of a local file; a RecordError when it is not a whole ArrayRecord file (a cut-short
    or damaged file opens as a reader that is not ok() and holds no records: its error comes with close())."""
    try:
        reader = _module().ArrayRecordReader(path, options)
    except (RuntimeError, ValueError, OSError) as e:
        raise RecordError(f"not a whole ArrayRecord file ({_first_line(e)})") from None
    if not reader.ok():
        why = "unreadable"
        try:
            reader.close()
        except (RuntimeError, ValueError, OSError) as e:
            why = _first_line(e)
        raise RecordError(f"not a whole ArrayRecord file ({why})")
    return reader


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def read(path: str, skip_data: bool = False, files=storage.BEAM) -> Iterator[tuple[int, bytes | None]]:
    """(record number, data) of each record of a shard, in order (as `tfrecord.read`). Riegeli checks every
    chunk's hash as it reads; `skip_data` reads the index only. A RecordError names where the file stops being
    readable."""
    with local_file(path, files) as local:
        reader = open_reader(local)
        try:
            total = reader.num_records()
            if skip_data:
                yield from ((i, None) for i in range(total))
                return
            for start in range(0, total, _BATCH):
                end = min(total, start + _BATCH)
                try:
                    batch = reader.read(start, end)
                except (RuntimeError, ValueError, OSError) as e:
                    raise RecordError(f"record {start}..{end - 1}: unreadable ({_first_line(e)})") from None
                yield from enumerate(batch, start)
        finally:
            reader.close()


def options_of(path: str) -> str:
    """The writer options a local ArrayRecord file was written with (group size, compression)."""
    reader = open_reader(path)
    try:
        return reader.writer_options_string()
    finally:
        reader.close()
