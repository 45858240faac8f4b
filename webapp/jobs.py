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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.logs import PROGRESS_FILE_ENV

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
APP_DIR = ".app"  # the app's own files in the save folder: its lock, the jobs' progress reports
LOG_LINES = 60
CANCEL_GRACE = 10.0


def command_label(command: list[str]) -> str:
    """``tgm.py workspace`` for ``[.../tgm.py, workspace, ...]``; a script's name otherwise."""
    name = Path(command[0]).name
    return f"{name} {command[1]}" if name == "tgm.py" and len(command) > 1 else name


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

    def progress(self) -> dict | None:
        """The last progress report of the running command: {desc, n, total}."""
        try:
            lines = self.progress_file.read_text().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return None

    def as_json(self) -> dict:
        return {
            "id": self.id, "clip": self.clip, "kind": self.kind, "state": self.state,
            "stage": self.stage + 1 if self.state == "running" else len(self.commands), "stages": len(self.commands),
            "step": command_label(self.commands[min(self.stage, len(self.commands) - 1)]),
            "progress": self.progress(), "message": self.message, "log": list(self.log),
            "seconds": round((self.ended or time.time()) - self.started, 1),
        }  # fmt: skip


class JobRunner:
    """Runs at most one job at a time (per app, that is per workspace)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
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
            self.work_dir.mkdir(parents=True, exist_ok=True)
            job_id = next(self._ids)
            job = Job(job_id, clip, kind, commands, self.work_dir / f"progress-{os.getpid()}-{job_id}.jsonl")
            job.progress_file.write_text("")
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
                    job.log.append(line.rstrip()[-300:])
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

    @staticmethod
    def _wait(process: subprocess.Popen) -> int:
        return process.wait()
