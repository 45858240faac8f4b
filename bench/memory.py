"""Peak memory of a block of work: GPU allocator statistics, the process's resident set on CPUs, or
the tensors an operator sequence makes (:class:`TensorPeak`, exact and the same on every run)."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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


class TensorPeak(TorchDispatchMode):
    """``with TensorPeak() as peak: ...`` then ``peak.bytes``: the most bytes that tensors made
    inside the block held at once, counted from the operators' outputs (each storage once, until
    the last tensor on it goes), on any device and whatever the allocator keeps. Tensors that
    existed before the block (weights, inputs) are not counted, nor an operator's scratch memory
    that never becomes a tensor (oneDNN's, cuDNN's workspaces). Deterministic, unlike a sampled
    resident set."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors on it]
        self.held = self.bytes = 0

    def _release(self, address: int) -> None:
        entry = self._live.get(address)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.held -= entry[0]
                del self._live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            address = tensor.untyped_storage().data_ptr()
            entry = self._live.get(address)
            if entry is None:
                if address in inputs:  # a view or an in-place result of a tensor made before the block
                    continue
                entry = self._live[address] = [tensor.untyped_storage().nbytes(), 0]
                self.held += entry[0]
                self.bytes = max(self.bytes, self.held)
            entry[1] += 1
            weakref.finalize(tensor, self._release, address)
        return out
