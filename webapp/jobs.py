"""Background jobs of the web app: the project's own scripts run as child processes, one job at a
time per workspace, watched through their progress reports and cancellable.

Running the scripts (rather than calling the library in the server's process) keeps the server
responsive, frees all the network's memory when a job ends, and lets a cancel stop a job at once:
outputs are written atomically and reruns redo only what is missing, so a cancelled job leaves
nothing half-written and loses only the work it had not finished.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.io import private_subfolder
from utils.logs import PROGRESS_FILE_ENV

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
APP_DIR = ".app"  # the app's own files in the save folder: its lock, the jobs' progress reports
LOG_LINES = 60
WARNINGS_KEPT = 10  # warning lines a job keeps apart from its log, so that they never scroll out
LOG_LINE_CHARS = 400  # a longer output line keeps its start (where "error:" is) and loses its end
CANCEL_GRACE = 10.0
PROGRESS_TAIL = 4096  # bytes of the progress file a poll reads: the last report is in them


def command_label(command: list[str]) -> str:
    """``tgm.py workspace`` for ``[.../tgm.py, workspace, ...]``; a script's name otherwise."""
    name = Path(command[0]).name
    return f"{name} {command[1]}" if name == "tgm.py" and len(command) > 1 else name


def new_progress_file(folder: Path) -> Path:
    """An empty progress file of a job in ``folder``, under a name no one can guess, made exclusively
    (a file or a link already there is never written through)."""
    while True:
        path = folder / f"progress-{secrets.token_hex(16)}.jsonl"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            return path
        except FileExistsError:
            continue


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Job:
    """One job: a few scripts run in order (each command: a script path and its arguments).
    ``state``: running, done, failed or cancelled."""

    id: int
    clip: str
    kind: str
    commands: list[list[str]]
    progress_file: Path
    state: str = "running"
    stage: int = 0
    message: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    process: subprocess.Popen | None = None
    cancel_requested: bool = False
    final_progress: dict | None = None  # the last report, kept when the job's progress file goes
    warnings: list[str] = field(default_factory=list)  # the first WARNINGS_KEPT warning lines
    warning_count: int = 0

    def progress(self) -> dict | None:
        """The last progress report of the running command: {desc, n, total, unit}. Only the file's
        last PROGRESS_TAIL bytes are read, and only from the regular file the job made (not through
        a link), so a poll costs the same however long the job runs."""
        try:
            fd = os.open(self.progress_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            tail = os.pread(fd, PROGRESS_TAIL, max(0, info.st_size - PROGRESS_TAIL)).decode(errors="replace")
        finally:
            os.close(fd)
        for line in reversed(tail.splitlines()):
            try:
                report = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(report, dict):
                return report
        return None

    def as_json(self) -> dict:
        return {
            "id": self.id, "clip": self.clip, "kind": self.kind, "state": self.state,
            "stage": self.stage + 1 if self.state == "running" else len(self.commands), "stages": len(self.commands),
            "step": command_label(self.commands[min(self.stage, len(self.commands) - 1)]),
            "progress": self.progress() if self.ended is None else self.final_progress,
            "message": self.message, "log": list(self.log), "warnings": self.warnings,
            "warning_count": self.warning_count,
            "seconds": round((self.ended or time.time()) - self.started, 1),
        }  # fmt: skip


class JobRunner:
    """Runs at most one job at a time (per app, that is per workspace)."""

    def __init__(self, save: Path) -> None:
        self.save = save  # the jobs' progress files go in its .app/, made there, never through a link
        self._lock = threading.Lock()
        self._launch = threading.Lock()  # a cancel and the start of a command never interleave
        self._ids = itertools.count(1)
        self.current: Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def busy(self) -> bool:
        return self.current is not None and self.current.state == "running"

    def start(self, clip: str, kind: str, commands: list[list[str]]) -> Job:
        """Start a job; RuntimeError when one is running."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the app is shutting down: no new jobs")
            if self.busy():
                raise RuntimeError(f"a {self.current.kind} job on {self.current.clip} is running; wait or cancel it")
            job_id = next(self._ids)
            progress_file = new_progress_file(private_subfolder(self.save, APP_DIR))
            job = Job(job_id, clip, kind, commands, progress_file)
            self.current = job
        self._thread = threading.Thread(target=self._run, args=(job,), daemon=True, name=f"job-{job_id}")
        self._thread.start()
        return job

    def cancel(self) -> Job | None:
        job = self.current
        if job is None or job.state != "running":
            return job
        with self._launch:  # either the job has not started its command (it will see the flag) or it has
            job.cancel_requested = True
            process = job.process
        if process is not None and process.poll() is None:
            # Ctrl-C for the script and what it started: temporary files are removed, finished
            # outputs stay; a script that does not stop within CANCEL_GRACE seconds is killed.
            _signal_group(process, signal.SIGINT)
            killer = threading.Timer(CANCEL_GRACE, _signal_group, (process, signal.SIGKILL))
            killer.daemon = True
            killer.start()
        return job

    def stop(self, timeout: float = CANCEL_GRACE + 5) -> None:
        """Refuse new jobs, cancel the running one and wait for it to end (the app is shutting down)."""
        with self._lock:
            self._closed = True
        self.cancel()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, job: Job) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PROGRESS_FILE_ENV: str(job.progress_file)})
        try:
            for stage, command in enumerate(job.commands):
                job.stage = stage
                with self._launch:
                    if job.cancel_requested:
                        break
                    arguments = command[2:] if " " in command_label(command) else command[1:]
                    job.log.append("$ " + " ".join([command_label(command), *arguments]))
                    job.process = subprocess.Popen(
                        [sys.executable, *command], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                        start_new_session=True,
                    )  # fmt: skip
                for line in job.process.stdout:
                    line = line.rstrip()
                    line = line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 1] + "…"
                    job.log.append(line)
                    if " WARNING " in line:
                        job.warning_count += 1
                        if len(job.warnings) < WARNINGS_KEPT:
                            job.warnings.append(line.split(" WARNING ", 1)[1])
                code = self._wait(job.process)
                if job.cancel_requested:
                    break
                if code != 0:
                    job.state = "failed"
                    errors = [line for line in job.log if line.startswith("error:") or " ERROR " in line]
                    job.message = errors[-1] if errors else f"{command_label(command)} exited with code {code}"
                    return
            job.state = "cancelled" if job.cancel_requested else "done"
            job.message = "cancelled: finished outputs were kept" if job.cancel_requested else "finished"
        except Exception as exc:  # a job's failure must never take the server down
            log.exception("job %d failed", job.id)
            job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.ended = time.time()
            job.process = None
            job.final_progress = job.progress()
            try:
                job.progress_file.unlink()
            except OSError:
                pass

    @staticmethod
    def _wait(process: subprocess.Popen) -> int:
        return process.wait()
