"""Logging that plays well with tqdm progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    """INFO (DEBUG with ``verbose``) to stderr through tqdm, and everything to ``log_file``.

    Under torchrun every line says which rank wrote it.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = _TqdmHandler()
    rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    console.setFormatter(logging.Formatter(f"%(asctime)s {rank}%(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if log_file is not None:
        add_log_file(log_file)


def add_log_file(log_file: Path) -> logging.Handler:
    """Send INFO and above to ``log_file`` too (appending); returns the handler."""
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Log to ``path`` while the block runs (library callers may run several jobs per process)."""
    root = logging.getLogger()
    level = root.level
    handler = add_log_file(path)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)


def progress(*args, **kwargs) -> tqdm:
    """tqdm for long loops; refreshes calmly (every 10 s) when stderr is not a terminal."""
    kwargs.setdefault("dynamic_ncols", True)
    if int(os.environ.get("RANK", "0")) != 0:
        kwargs["disable"] = True  # under torchrun, rank 0's bar stands for the job
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    return tqdm(*args, **kwargs)
