"""Files on local disks and gs:// alike. Local paths go through the standard library; anything with a scheme
(gs://, s3://, ...) goes through Beam's FileSystems, which Dataflow workers have anyway.

Beam is imported only for remote paths, so the commands answer --help, usage mistakes and local work without
paying for its import (about a second).
"""

from __future__ import annotations

import fnmatch
import glob
import gzip as gzip_
import os


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def is_remote(path: str) -> bool:
    return "://" in path


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    from apache_beam.io.filesystem import CompressionTypes

    with _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def open_read(path: str, gzip: bool = False):
    """A binary file object for reading; `gzip` decompresses on the fly."""
    if not is_remote(path):
        return gzip_.open(path, "rb") if gzip else open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().open(path, compression_type=CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED)


def write_bytes(path: str, data: bytes) -> None:
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return
    with _fs().create(path) as f:
        f.write(data)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    try:
        return _fs().exists(path)
    except Exception:  # noqa: BLE001 - an unreachable or malformed path does not exist for us
        return False


def match(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; an absent folder matches nothing."""
    return sorted(sizes(pattern))


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _local_sizes(pattern: str) -> dict[str, int]:
    """Beam's local matching, without Beam: files only (no folders), and `*` matches names starting with a dot."""
    head, tail = os.path.split(pattern)
    found = {}
    for folder in (glob.glob(head) if _has_magic(head) else [head or "."]):
        if not _has_magic(tail):
            names = [tail]
        else:
            try:
                names = fnmatch.filter(os.listdir(folder), tail)
            except OSError:  # not a folder, or gone
                continue
        for name in names:
            path = os.path.join(folder, name) if head else name
            try:
                if os.path.isfile(path):
                    found[path] = os.path.getsize(path)
            except OSError:  # removed meanwhile
                pass
    return found


def sizes(pattern: str) -> dict[str, int]:
    """{path: size in bytes} of the files (not folders) matching a glob."""
    if not is_remote(pattern):
        return _local_sizes(pattern)
    try:
        return {m.path: m.size_in_bytes for m in _fs().match([pattern])[0].metadata_list}
    except Exception:  # noqa: BLE001
        return {}


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
