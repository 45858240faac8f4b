"""Choosing and preparing the compute device."""

from __future__ import annotations

import logging
import os

import torch

from utils.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """``--device`` (auto, cpu, cuda, cuda:N, mps) and the published ``--gpu N`` -> a torch device.

    auto: CUDA when present, else the CPU. ``--gpu N`` means cuda:N unless --device says otherwise.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if gpu is not None and gpu >= 0 and torch.cuda.is_available():
            name = f"cuda:{gpu}"
        else:
            name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and gpu is not None and gpu >= 0:
        name = f"cuda:{gpu}"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no CUDA GPU visible to PyTorch; use --device cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible; pick cuda:0.."
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        device = torch.device("cuda", index)
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    elif device.type != "cpu":
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def device_free_bytes(device: torch.device) -> int | None:
    """Bytes this process may still take on a CUDA ``device``, None on other devices: the driver's
    free memory plus what torch's caching allocator holds without handing it out (reserved, not
    allocated: this process can reuse it, and to the driver it looks taken), capped by the share
    ``torch.cuda.set_per_process_memory_fraction`` allows less what is allocated. Without the
    cached share, later clips in one process (the workspace, the app) would get smaller budgets."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    free += max(0, torch.cuda.memory_reserved(device) - allocated)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if fraction is not None:
        free = min(free, max(0, int(fraction(device) * total) - allocated))
    return free


def prepare_device(device: torch.device, system=None) -> None:
    """Per-device settings: flush subnormal floats on the CPU (softmax in the memory read makes
    them, and they made a segment step up to 8x slower); on CUDA the cuDNN switches of the
    config's SYSTEM node (CUDNN_ENABLED, CUDNN_BENCHMARK, CUDNN_DETERMINISTIC) when given, and TF32
    off (fp32 stays fp32)."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    elif device.type == "cuda":
        torch.cuda.set_device(device)
        # fp32 means fp32: cuDNN convolutions default to TF32 on Ampere and later GPUs, which moves
        # the published numbers by more than rounding; --precision bf16/fp16 is the faster path.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        if system is not None:
            torch.backends.cudnn.enabled = system.CUDNN_ENABLED
            torch.backends.cudnn.benchmark = system.CUDNN_BENCHMARK
            torch.backends.cudnn.deterministic = system.CUDNN_DETERMINISTIC
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def machine_description(device: torch.device) -> str:
    """What a speed measurement on ``device`` depends on, in one line: the GPU's name and compute
    capability, or the CPU's model, its vector flags and the cores this process may use; and torch."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        what = f"{torch.cuda.get_device_name(device)} (sm{major}{minor})"
    else:
        model, flags = "unknown CPU", set()
        try:
            with open("/proc/cpuinfo") as handle:
                for line in handle:
                    if line.startswith("model name") and model == "unknown CPU":
                        model = line.split(":", 1)[1].strip()
                    elif line.startswith("flags") and not flags:
                        flags = set(line.split(":", 1)[1].split())
        except OSError:
            pass
        vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        what = f"{model} ({', '.join(vector) or 'no AVX2'}; {cores} cores, {torch.get_num_threads()} threads)"
    return f"{device.type}: {what}, torch {torch.__version__}"
