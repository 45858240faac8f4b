"""Choosing and preparing the compute device."""

from __future__ import annotations

import logging

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
