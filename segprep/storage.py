"""Files on local disks and gs:// alike, through Beam's FileSystems (which Dataflow workers have anyway).

Beam is imported on first use, so the parts of segprep that never touch files stay light.
"""

from __future__ import annotations


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes

    with _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def open_read(path: str, gzip: bool = False):
    """A binary file object for reading; `gzip` decompresses on the fly."""
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().open(path, compression_type=CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED)


def write_bytes(path: str, data: bytes) -> None:
    with _fs().create(path) as f:
        f.write(data)


def exists(path: str) -> bool:
    try:
        return _fs().exists(path)
    except Exception:  # noqa: BLE001 - an unreachable or malformed path does not exist for us
        return False


def match(pattern: str) -> list[str]:
    """Paths matching a glob; an absent folder matches nothing."""
    try:
        return [m.path for m in _fs().match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001
        return []


def sizes(pattern: str) -> dict[str, int]:
    """{path: size in bytes} of the files matching a glob."""
    try:
        return {m.path: m.size_in_bytes for m in _fs().match([pattern])[0].metadata_list}
    except Exception:  # noqa: BLE001
        return {}


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_remote(path: str) -> bool:
    return "://" in path
