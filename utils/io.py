"""Atomic file writes: a temporary file in the same folder, then a rename.

An interrupted run (Ctrl-C, kill) therefore leaves only complete files behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from utils.errors import UserError


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not safe while writer threads run.
_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    The file gets the permissions an ordinary write would give it (0666 less the umask), not the
    0600 of a temporary file: results are shared on multi-user file systems.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj))


def encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()


def atomic_write_png(path: Path, image: np.ndarray) -> None:
    """Write an image (H x W or H x W x C uint8, OpenCV channel order) as PNG, atomically."""
    atomic_write_bytes(path, encode_png(image))


def atomic_torch_save(obj: object, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


class BackgroundWriter:
    """Writes files on a background thread so the network never waits on disk.

    ``submit`` queues a write; ``flush`` waits for all queued writes and re-raises the first
    error. With ``workers == 0`` writes happen inline.
    """

    def __init__(self, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="writer") if workers > 0 else None
        self._pending: list[Future] = []

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        if self._pool is None:
            function(*args)
            return
        self._pending.append(self._pool.submit(function, *args))
        if len(self._pending) > 64:
            self._drain(keep=16)

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
