"""Every file segprep reads or writes, local or remote (gs://, s3://, ...), goes through here: the one file layer.

Which backend serves which path:
- local paths: the standard library, for every command. No Beam or TensorFlow import, so --help, usage mistakes
  and local work answer at once; Beam's local matching rules are kept (files only, `*` matches dotfiles).
- remote paths, in prepare and the dataset tools (scan, verify, inspect): Beam's FileSystems. Dataflow workers
  have it, it needs no TensorFlow, and one `match` is one listing of the prefix before the first wildcard.
- remote paths, in the trainer (train, predict, evaluate): TensorFlow's tf.io.gfile, the GCS client tf.data reads
  the shards with (its credentials, retries and TLS settings). The trainer calls the same functions on
  `storage.TENSORFLOW` (trainer/common.py's `files`); the module-level functions are `storage.BEAM`'s. The choice
  is per caller, never a process-wide switch, so one process may run both.
- shard files (`create`): Beam's FileSystems on every path, so that gzip-compressed shards are the same bytes
  wherever they are written.

Errors of a remote backend are not turned into "absent": an unreachable bucket raises, it is never read as empty.
"""

from __future__ import annotations

import fnmatch
import functools
import glob as glob_
import gzip as gzip_
import os
import shutil


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _tensorflow_gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_remote(path: str) -> bool:
    return "://" in path


class StorageError(OSError):
    """A remote store that could not be asked: a listing, read or write that failed after the client's own
    retries (no permission, no such bucket, the network). Never taken for "absent" or "empty"; the commands end
    with one line naming the path and the cause."""


def _remote_errors(what: str):
    """Turns any failure of a remote call into a StorageError naming `what`, the path and the cause."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, path, *args, **kwargs):
            first = path[0] if isinstance(path, list) and path else path
            if not (isinstance(first, str) and is_remote(first)):
                return method(self, path, *args, **kwargs)
            try:
                return method(self, path, *args, **kwargs)
            except StorageError:
                raise
            except Exception as e:  # noqa: BLE001 - every client has its own exception types
                cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise StorageError(f"cannot {what} {first}: {type(e).__name__}" + (f": {cause}" if cause else "")) \
                    from e

        return wrapper

    return decorate


class Files:
    """The file functions, with remote paths served by Beam's FileSystems ("beam") or tf.io.gfile
    ("tensorflow"); local paths always by the standard library."""

    def __init__(self, remote: str, gfile=_tensorflow_gfile):
        self.remote = remote
        self._gfile = gfile  # → tf.io.gfile, imported on first use (the trainer passes its quiet import)

    def _tf(self) -> bool:
        return self.remote == "tensorflow"

    def _folders(self, what: str):
        """tf.io.gfile, for the folder operations only the trainer needs on a remote store (run dirs: isdir,
        listdir, rmtree, walk); prepare and the tools never ask an object store for folders."""
        if not self._tf():
            raise NotImplementedError(f"{what} of a remote folder goes through storage.TENSORFLOW (tf.io.gfile)")
        return self._gfile()

    @_remote_errors("read")
    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    @_remote_errors("read")
    def open_read(self, path: str, gzip: bool = False):
        """A binary file object for reading (seekable); `gzip` decompresses on the fly."""
        if not is_remote(path):
            return gzip_.open(path, "rb") if gzip else open(path, "rb")
        if self._tf() and not gzip:
            return self._gfile().GFile(path, "rb")
        from apache_beam.io.filesystem import CompressionTypes

        return _fs().open(path, compression_type=CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED)

    @_remote_errors("write")
    def open_write(self, path: str):
        """A binary file object for writing a whole file; local parent folders are made."""
        if not is_remote(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            return open(path, "wb")
        if self._tf():
            return self._gfile().GFile(path, "wb")
        return _fs().create(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """A whole file, all at once: locally through a temp file renamed into place, so a reader (or a run killed
        mid-write) never sees half of it; an object store's write is atomic already."""
        if is_remote(path):
            with self.open_write(path) as f:
                f.write(data)
            return
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.remove(temp)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def create(self, path: str, gzip: bool = False):
        """A file object for a shard: Beam's FileSystems on every path (see the module docstring)."""
        from apache_beam.io.filesystem import CompressionTypes

        return _fs().create(path, compression_type=CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED)

    @_remote_errors("check")
    def exists(self, path: str) -> bool:
        """A file or folder (on an object store: an object, or what the backend reports as a folder)."""
        if not is_remote(path):
            return os.path.exists(path)
        if self._tf():
            return self._gfile().exists(path)
        return _fs().exists(path)

    @_remote_errors("check")
    def isdir(self, path: str) -> bool:
        if not is_remote(path):
            return os.path.isdir(path)
        return self._folders("isdir").isdir(path)

    @_remote_errors("list")
    def listdir(self, path: str) -> list[str]:
        """Names in a folder (files and folders, without a trailing '/')."""
        if not is_remote(path):
            return os.listdir(path)
        return [name.rstrip("/") for name in self._folders("listdir").listdir(path)]

    def makedirs(self, path: str) -> None:
        """A folder and its parents (nothing to make on an object store but for TensorFlow's bookkeeping)."""
        if not is_remote(path):
            os.makedirs(path, exist_ok=True)
        elif self._tf():
            self._gfile().makedirs(path)

    @_remote_errors("delete")
    def remove(self, paths: list[str]) -> None:
        """Deletes files."""
        remote = [p for p in paths if is_remote(p)]
        for p in paths:
            if not is_remote(p):
                os.remove(p)
        if remote and self._tf():
            for p in remote:
                self._gfile().remove(p)
        elif remote:
            _fs().delete(remote)

    @_remote_errors("delete")
    def rmtree(self, path: str) -> None:
        """Deletes a folder and everything in it."""
        if not is_remote(path):
            shutil.rmtree(path)
        else:
            self._folders("rmtree").rmtree(path)

    @_remote_errors("move")
    def rename(self, sources: list[str], targets: list[str]) -> None:
        """Moves files, replacing what is at the targets."""
        if not any(map(is_remote, sources + targets)):
            for s, t in zip(sources, targets):
                os.replace(s, t)
        elif self._tf():
            for s, t in zip(sources, targets):
                self._gfile().rename(s, t, overwrite=True)
        else:
            _fs().rename(sources, targets)

    @_remote_errors("copy")
    def copy(self, source: str, target: str) -> None:
        """One file, between any two places, overwriting."""
        if not is_remote(source) and not is_remote(target):
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            shutil.copyfile(source, target)
        elif self._tf():
            self._gfile().copy(source, target, overwrite=True)
        else:
            with self.open_read(source) as src, self.open_write(target) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

    def walk(self, top: str):
        """(folder, subfolders, files) for every folder under `top`, as os.walk gives them."""
        if not is_remote(top):
            yield from os.walk(top)
        else:
            yield from self._folders("walk").walk(top)

    def match(self, pattern: str) -> list[str]:
        """Paths of the files matching a glob, sorted; an absent folder matches nothing."""
        return sorted(self.sizes(pattern))

    def glob(self, pattern: str) -> list[str]:
        return self.match(pattern)

    @_remote_errors("list")
    def sizes(self, pattern: str) -> dict[str, int]:
        """{path: size in bytes} of the files (not folders) matching a glob. A remote listing that fails raises:
        an unreachable bucket is never taken for an empty one."""
        if not is_remote(pattern):
            return _local_sizes(pattern)
        if self._tf():
            gfile = self._gfile()
            return {p: gfile.stat(p).length for p in gfile.glob(pattern) if not gfile.isdir(p)}
        return {m.path: m.size_in_bytes for m in _fs().match([pattern])[0].metadata_list}


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _local_sizes(pattern: str) -> dict[str, int]:
    """Beam's local matching, without Beam: files only (no folders), and `*` matches names starting with a dot."""
    head, tail = os.path.split(pattern)
    found = {}
    for folder in (glob_.glob(head) if _has_magic(head) else [head or "."]):
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


def absent(path: str) -> bool:
    """True only when `path` is known not to exist: for explaining why a read failed, where a failed check must not
    raise in turn (it then says False, and the read's own error is what gets reported)."""
    try:
        return not exists(path)
    except Exception:  # noqa: BLE001
        return False


def local_folders(folder: str, prefix: str) -> list[str]:
    """Local folders directly in `folder` whose names start with `prefix`, empty ones included (a listing of
    files does not see those); none on an object store, which has no folders."""
    if is_remote(folder) or not os.path.isdir(folder):
        return []
    return sorted(e.path for e in os.scandir(folder) if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


BEAM = Files("beam")
TENSORFLOW = Files("tensorflow")

read_bytes = BEAM.read_bytes
open_read = BEAM.open_read
open_write = BEAM.open_write
write_bytes = BEAM.write_bytes
write_text = BEAM.write_text
create = BEAM.create
exists = BEAM.exists
isdir = BEAM.isdir
listdir = BEAM.listdir
makedirs = BEAM.makedirs
remove = BEAM.remove
rmtree = BEAM.rmtree
rename = BEAM.rename
copy = BEAM.copy
walk = BEAM.walk
match = BEAM.match
glob = BEAM.glob
sizes = BEAM.sizes
