"""Atomic file writes (a temporary file in the same folder, then a rename) and folder locks.

An interrupted run (Ctrl-C, kill) therefore leaves only complete files behind. Writes that hold
a user's work (keyframe trimaps, their backups, checkpoints, records) are also durable: the file
and its folder are flushed to the disk (fsync) before and after the rename, so that a power loss
leaves the old file or the new one, never an empty one.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from utils.errors import UserError
from utils.images import encode_png


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not safe while writer threads run.
_FILE_MODE = 0o666 & ~_process_umask()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk (where the file system can)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some network and FUSE file systems cannot sync a folder
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb", durable: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    The file gets the permissions an ordinary write would give it (0666 less the umask), not the
    0600 of a temporary file: results are shared on multi-user file systems. ``durable``: fsync
    the file before the rename and the folder after it. A full disk is a UserError naming the folder.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, mode) as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _write_error(path, exc) from None
        raise


def _temporary_prefix(path: Path) -> str:
    """``.<name>.`` for the temporary file beside ``path``, its name cut short where the temporary
    name would pass the 255 bytes a file name may have (the random part and ``.tmp`` follow)."""
    name = path.name.encode()[:200].decode(errors="ignore")
    return f".{name}."


def _write_error(path: Path, exc: OSError) -> Exception:
    """A full disk as a UserError naming the folder; any other error as it is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error = UserError(f"the disk holding {path.parent} is full ({exc.strerror}); free some space and rerun")
        error.__cause__ = exc
        return error
    return exc


def create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if no file is there, atomically and durably (a complete
    temporary file is linked into place, which fails if the name exists; on file systems without
    hard links, an exclusive create). Returns whether it wrote."""
    path = Path(path)
    if path.exists():
        return False
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_exclusive_without_links(path, data)
        fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        os.unlink(tmp_name)


def _create_exclusive_without_links(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)
    return True


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    atomic_write(path, lambda f: f.write(data), durable=durable)


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w", durable=durable)


def atomic_write_json(path: Path, obj: object, durable: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj), durable=durable)


def atomic_write_png(path: Path, image: np.ndarray, durable: bool = False) -> None:
    """Write an image (H x W or H x W x C uint8, OpenCV channel order) as PNG, atomically."""
    atomic_write_bytes(path, encode_png(image), durable=durable)


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save, atomically and durably (checkpoints are hours of work)."""
    import torch  # here, not at the top: commands that never save a checkpoint start without torch

    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


class BackgroundWriter:
    """Writes files on a background thread so the network never waits on disk.

    ``submit`` queues a write; ``flush`` waits for all queued writes and re-raises the first
    error. With ``workers == 0`` writes happen inline. At most ``3 + 2 * workers`` writes are queued
    at once: past ``2 + 2 * workers``, ``submit`` waits until the oldest are done and ``1 + workers``
    remain, which bounds the memory their inputs hold.
    """

    def __init__(self, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="writer") if workers > 0 else None
        self._pending: list[Future] = []
        self._most = 2 + 2 * workers

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        if self._pool is None:
            function(*args)
            return
        self._pending.append(self._pool.submit(function, *args))
        if len(self._pending) > self._most:
            self._drain(keep=self._most // 2)

    def _drain(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def flush(self) -> None:
        self._drain()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def ensure_writable_dir(path: Path, flag: str) -> Path:
    """Create ``path`` (and parents) if needed; UserError naming ``flag`` if it is not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path} cannot be created ({exc.strerror}); choose a folder you can write to") from exc
    if not path.is_dir():
        raise UserError(f"{flag} {path} is not a folder; choose a folder for the outputs")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable; choose a folder you can write to")
    return path


def refuse_inside(output: Path, output_flag: str, source: Path, source_flag: str) -> None:
    """UserError when ``output`` is ``source`` or lies inside it: nothing a user gave us is written into."""
    output, source = Path(output).resolve(), Path(source).resolve()
    if output == source or source in output.parents:
        raise UserError(
            f"{output_flag} {output} is inside {source_flag} {source}; nothing is written into your inputs: "
            "choose another folder"
        )


LOCK_NAME = ".lock"
_HELD: dict[Path, list[int]] = {}  # folder -> [fd, depth]: the locks this process holds


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``<folder>/.lock`` held while a run writes.

    A second writer (another run, another app, the app and a command line on one ``--save``) gets
    a UserError saying which process holds it. Within one process the lock is reentrant (a
    propagation that fuses takes it once for both). The lock goes with the process: a killed run
    leaves no stale lock. The lock file is opened without following a link and must be a regular
    file with no other name (a link or a hard link planted there is refused, never written
    through); who holds it is written only into a lock file this tool made (one it creates, or one
    holding nothing but what a lock writes, ``process N``): a file with anything else in it is never
    written or truncated. Use as a context manager.
    """

    def __init__(self, folder: Path, what: str, named_here: bool = False) -> None:
        self.folder, self.what, self.named_here = Path(folder), what, named_here
        self._key = self.folder.resolve()

    def __enter__(self) -> FolderLock:
        held = _HELD.get(self._key)
        if held is not None:
            held[1] += 1
            return self
        if self.named_here and self.folder.is_symlink():  # planted where this tool names its own folder
            raise UserError(
                f"{self.folder} is a link (to {os.readlink(self.folder)}): this tool names that folder and writes, "
                f"replaces and removes files in it ({self.what}); remove the link, or move the real folder there"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd, created = _open_lock_file(path, self.what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{self.folder} is being written by {holder}; wait for it to finish (or stop it), "
                f"or give this {self.what} another folder"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise UserError(
                f"{path} cannot be locked ({exc.strerror}); use a local folder for this {self.what}"
            ) from exc
        if created or _made_by_a_lock(fd):
            try:
                holder = f"process {os.getpid()}".encode()
                os.pwrite(fd, holder, 0)
                os.ftruncate(fd, len(holder))
            except OSError:
                pass  # who holds it is only for the message of a second writer
        _HELD[self._key] = [fd, 1]
        return self

    def __exit__(self, *exc_info) -> None:
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self._key]
            os.close(held[0])  # closing releases the flock


def _made_by_a_lock(fd: int) -> bool:
    """The file holds what a lock of this tool writes (``process N``): one an earlier run made."""
    try:
        content = os.pread(fd, 64, 0)
    except OSError:
        return False
    return content == b"" or (content.startswith(b"process ") and content[8:].isdigit())


def _open_lock_file(path: Path, what: str) -> tuple[int, bool]:
    """(a descriptor of the lock file, whether this call created it), never through a link."""
    refuse = f"{path} is not the lock file this tool makes ({{}}); remove it, or give this {what} another folder"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE), True
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(refuse.format("a link")) from None
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise UserError(f"{path} cannot be made ({exc.strerror}); use a folder you can write to") from exc
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError:  # another user's lock file on a shared folder: flock needs no write access
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(refuse.format("a link")) from None
        raise UserError(f"{path} cannot be opened ({exc.strerror}); use a folder you can write to") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UserError(refuse.format("not a regular file" if not stat.S_ISREG(info.st_mode) else "it has other names"))
    return fd, False


def private_subfolder(root: Path, *names: str) -> Path:
    """``root/names...``, each level made as a real folder (not through a link) and inside ``root``:
    where a tool writes its own files under a folder it was given (the app's ``.app``, the tune
    cache), a link planted there must not lead its writes elsewhere. UserError otherwise. ``root``
    itself is the user's and is made as it is asked for."""
    folder = Path(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder} cannot be made ({exc.strerror}); use a folder you can write to") from exc
    base = folder.resolve()
    for name in names:
        folder = folder / name
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _write_error(folder, exc) from None
            raise UserError(f"{folder} cannot be made ({exc.strerror}); use a folder you can write to") from exc
        if folder.is_symlink() or not folder.is_dir():
            raise UserError(f"{folder} is a link or not a folder; this tool keeps its own files there: remove it")
        info = folder.stat()
        if info.st_uid != os.geteuid() or info.st_mode & stat.S_IWOTH:
            raise UserError(
                f"{folder} belongs to another user or anyone may write in it; this tool keeps its own files "
                "there: remove it (it is made again, yours alone)"
            )
    if base not in folder.resolve().parents:
        raise UserError(f"{folder} leads outside {root}; remove the link that makes it do so")
    return folder


class NotARegularFileError(UserError):
    """A path that was to be read as a file is a link, a FIFO, a device or a folder, or is too large."""


def open_regular(path: Path, what: str, limit: int | None = None) -> BinaryIO:
    """``path`` opened for reading, never through a link in its last component and never waiting on
    a FIFO: only a regular file of at most ``limit`` bytes is opened (NotARegularFileError otherwise,
    naming ``what``; OSError when it is missing or unreadable). Read from the descriptor, what was
    checked is what is read, whatever the name points at a moment later."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(f"{what} ({path}) is not a regular file; remove it or put the file itself there")
        if limit is not None and info.st_size > limit:
            raise NotARegularFileError(f"{what} ({path}) is {info.st_size} bytes, more than the {limit} this reads")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path`` as :func:`open_regular` allows: a regular file, not a link, at most ``limit``."""
    with open_regular(path, what, limit) as handle:
        return handle.read(limit + 1)[:limit]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest_once(path: Path) -> str:
    """:func:`file_digest`, computed once per file version (size and modification time): for
    large files asked for again and again (a video clip, a background video)."""
    stat = Path(path).stat()
    return _digest_of_version(Path(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest_of_version(path: Path, size: int, mtime_ns: int) -> str:
    return file_digest(path)
