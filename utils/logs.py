"""Logging that plays well with tqdm progress bars."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
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


OFF_TERMINAL_LINES = 10  # progress lines a whole loop may print into a log file
PROGRESS_FILE_ENV = "TRIMAP_PROGRESS_FILE"  # set: every bar also reports to this file as JSON lines
REPORT_INTERVAL = 0.5  # seconds between two reports of one bar


class _ReportingBar(tqdm):
    """A tqdm bar that also appends ``{"desc", "n", "total"}`` JSON lines to a file, for a
    program watching the work (the web app): at most every REPORT_INTERVAL seconds, and at the end."""

    def __init__(self, iterable=None, *, report_to: str, **kwargs) -> None:
        self._report_to = report_to
        self._reported = 0.0
        super().__init__(iterable, **kwargs)
        self._report(force=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: float = 1) -> bool | None:
        shown = super().update(n)
        self._report()
        return shown

    def close(self) -> None:
        if not getattr(self, "_closed_report", False):
            self._closed_report = True
            self._report(force=True)
        super().close()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._reported < REPORT_INTERVAL:
            return
        self._reported = now
        line = json.dumps({"desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit})
        try:  # the watcher made the file: append to it, never through a link, never make one
            fd = os.open(self._report_to, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # the watcher's file is gone (or is not one): the work goes on


def progress(iterable=None, **kwargs) -> tqdm:
    """tqdm for long loops. Off a terminal (nohup, CI, cluster logs) a loop prints a few lines at
    most: one per tenth of the work and at least 10 s apart (60 s when the total is unknown), plus
    the last; ``set_postfix(..., refresh=False)`` then adds no lines of its own."""
    kwargs.setdefault("dynamic_ncols", True)
    if int(os.environ.get("RANK", "0")) != 0:
        kwargs["disable"] = True  # under torchrun, rank 0's bar stands for the job
    stream = kwargs.get("file") or sys.stderr
    if not stream.isatty():
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if total:
            kwargs.setdefault("miniters", max(1, (total - kwargs.get("initial", 0)) // OFF_TERMINAL_LINES))
            kwargs.setdefault("mininterval", 10.0)
        else:
            kwargs.setdefault("mininterval", 60.0)
    report_to = os.environ.get(PROGRESS_FILE_ENV)
    if report_to and not kwargs.get("disable"):
        return _ReportingBar(iterable, report_to=report_to, **kwargs)
    return tqdm(iterable, **kwargs)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 42 s, 7 min, 2.6 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
