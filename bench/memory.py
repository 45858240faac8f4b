"""Peak memory of a block of work: GPU allocator statistics, or the process's resident set on CPUs."""

from __future__ import annotations

import os
import sys
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.bytes``: the most memory held above
    what was held on entry.

    CUDA: the caching allocator's peak. CPU: the resident set sampled every ``interval`` seconds
    on a thread (torch releases the GIL in its kernels, so the sampler runs during them). Run with
    ``MALLOC_MMAP_THRESHOLD_`` set (bench scripts re-execute themselves so) so that freed large
    buffers leave the resident set at once instead of staying in malloc's arenas.
    """

    def __init__(self, device: torch.device, interval: float = 0.0005) -> None:
        self.device = device
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = resident_bytes()
            self._peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, resident_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, resident_bytes())
            self.bytes = self._peak - self._start


def ensure_malloc_settings() -> None:
    """Re-execute this Python process with malloc returning large buffers to the OS at once."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and os.name == "posix":
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        spec = getattr(sys.modules["__main__"], "__spec__", None)  # python -m bench.NAME: run it the same way
        command = ["-m", spec.name, *sys.argv[1:]] if spec is not None else sys.argv
        os.execve(sys.executable, [sys.executable, *command], env)
