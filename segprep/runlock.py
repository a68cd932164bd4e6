"""One run per output folder: a lock that a killed run cannot leave stuck.

prepare takes it in --output_dir and train in --model_dir before they delete or write anything there; a second run
into the same folder is refused with one line naming the run that holds it:

- local folders: `FOLDER/.segprep-lock`, held with flock(2). The kernel drops the lock when its holder exits, killed
  or not, so a stale file is simply taken over (pid liveness checks would race with pid reuse). The file holds the
  holder's command, pid, host and start time, for the message; the holder deletes it when it is done.
- gs:// (any object store with conditional writes): the object `FOLDER/.segprep-lock`, created only if absent
  (a GCS precondition, ifGenerationMatch=0). The holder rewrites it every HEARTBEAT seconds; a lock not rewritten
  for STALE seconds belongs to a run that died, and is taken over by a compare-and-swap on its generation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

from segprep import storage

LOCK_NAME = ".segprep-lock"
HEARTBEAT = 60.0  # seconds between a gs:// holder's rewrites of its lock
STALE = 600.0  # a gs:// lock not rewritten for this long is a dead run's


class FolderError(Exception):
    """Another run holds the folder, or the folder cannot be written: one line saying which and what to do."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock: what the message names."""

    command: str
    pid: int
    host: str
    started: float
    beat: float = 0.0  # gs://: the last heartbeat

    @classmethod
    def me(cls, command: str) -> Holder:
        now = time.time()
        return cls(command, os.getpid(), socket.gethostname(), now, now)

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self)) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Holder | None:
        try:
            obj = json.loads(data)
            return cls(str(obj["command"]), int(obj["pid"]), str(obj["host"]), float(obj["started"]),
                       float(obj.get("beat", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"`{self.command}` (pid {self.pid} on {self.host}, started {when})"


def _busy(folder: str, holder: Holder | None) -> FolderError:
    who = holder.describe() if holder else "another segprep run"
    return FolderError(f"{folder} is being written by {who}; wait for it to finish, or choose another folder.")


@contextlib.contextmanager
def hold(folder: str, command: str) -> Iterator[None]:
    """Holds the lock of `folder` (made if absent, and removed again if the run leaves it empty) for the block;
    raises `FolderError` when another run holds it."""
    folder = folder.rstrip("/")
    if storage.is_remote(folder):
        with _hold_remote(folder, command):
            yield
    else:
        with _hold_local(folder, command):
            yield


def make_folder(folder: str) -> None:
    """Makes a local folder (and its parents), or raises `FolderError` in one line: a file in the way, no
    permission, a read-only disk."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FolderError(f"{folder} is a file, not a folder: choose another path.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != folder else ""
        raise FolderError(f"cannot make the folder {folder}{where}: {e.strerror}; choose a folder you can "
                          "write.") from None
    try:  # a file really written says what os.access cannot: a read-only disk, a full one, root's permissions
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise FolderError(f"cannot write in {folder}: {e.strerror}; choose a folder you can write.") from None


@contextlib.contextmanager
def _hold_local(folder: str, command: str) -> Iterator[None]:
    path = os.path.join(folder, LOCK_NAME)
    me = Holder.me(command)
    made = not os.path.lexists(folder)
    make_folder(folder)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise FolderError(f"{path} is a symbolic link, not segprep's lock: remove it, or choose another "
                                  "folder.") from None
            raise FolderError(f"cannot write in {folder}: {e.strerror}; choose a folder you can write.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = Holder.from_json(os.pread(fd, 4096, 0))
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise _busy(folder, holder) from None
            raise
        try:  # the holder before us may have deleted the file between our open and our lock: lock the file again
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.to_json(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a run waiting on the old file sees it gone and tries again
        os.close(fd)
        if made:  # a run that stopped before writing anything (a usage mistake) leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _gcs_blob(path: str):
    """The google-cloud-storage blob at gs://B/O (the client apache-beam[gcp] brings; Application Default
    Credentials, as Beam's and TensorFlow's GCS clients use; STORAGE_EMULATOR_HOST points it at an emulator)."""
    from google.cloud import storage as gcs

    bucket, _, name = path[len("gs://"):].partition("/")
    return gcs.Client().bucket(bucket).blob(name)


@contextlib.contextmanager
def _hold_remote(folder: str, command: str) -> Iterator[None]:
    path = f"{folder}/{LOCK_NAME}"
    if not path.startswith("gs://"):
        yield  # no conditional writes through Beam's other filesystems: unlocked, as before
        return
    from google.api_core import exceptions

    me = Holder.me(command)
    try:
        blob = _gcs_blob(path)
    except Exception as e:  # noqa: BLE001 - no credentials, no client: the store cannot be asked
        raise storage.StorageError(f"cannot lock {folder}: {type(e).__name__}: {e}") from e
    try:
        blob.upload_from_string(me.to_json(), if_generation_match=0)
    except exceptions.PreconditionFailed:
        blob.reload()
        seen = blob.generation
        holder = Holder.from_json(blob.download_as_bytes(if_generation_match=seen))
        if holder is not None and time.time() - max(holder.beat, holder.started) < STALE:
            raise _busy(folder, holder) from None
        try:  # a dead run's lock: take it over unless someone else just did
            blob.upload_from_string(me.to_json(), if_generation_match=seen)
        except exceptions.PreconditionFailed:
            blob.reload()
            raise _busy(folder, Holder.from_json(blob.download_as_bytes())) from None
    except exceptions.GoogleAPIError as e:
        raise storage.StorageError(f"cannot lock {folder}: {type(e).__name__}: {e}") from e
    generation = [blob.generation]
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat is retried; STALE allows several
                blob.upload_from_string(dataclasses.replace(me, beat=time.time()).to_json(),
                                        if_generation_match=generation[0])
                generation[0] = blob.generation

    thread = threading.Thread(target=beat, name="segprep-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            blob.delete(if_generation_match=generation[0])
