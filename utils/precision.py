"""Reduced precision and memory layout for the fast paths."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator

import torch

from utils.errors import UserError

log = logging.getLogger(__name__)

# name -> the autocast dtype (None: tensors stay fp32; tf32 rounds the inputs of CUDA's products)
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of contexts for ``precision`` on ``device`` (fp32: a null context).

    bf16/fp16: autocast; convolutions and matrix products run in bf16/fp16; softmax and the outputs
    stay fp32, and so does the memory read, except on CUDA where the fused read follows autocast
    (``STM.read_follows_autocast``, set by ``inference.driver.configure_model``). tf32 (CUDA,
    compute capability 8.0 and later): fp32 tensors, convolutions and matrix products on TF32
    tensor cores (inputs rounded to 10 mantissa bits) inside the context; outside it TF32 stays
    off, as ``utils.device.prepare_device`` left it.
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "tf32":
        if device.type != "cuda":
            raise UserError(
                f"--precision tf32 runs on NVIDIA GPUs (Ampere and later); on {device.type} use fp32, or bf16 "
                "where the CPU has AVX512-BF16 or AMX"
            )
        if torch.cuda.get_device_capability(device)[0] < 8:
            raise UserError(f"{torch.cuda.get_device_name(device)} has no TF32 (it came with Ampere); use fp32 or fp16")
        return tf32
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UserError(f"{torch.cuda.get_device_name(device)} has no bf16 support; use --precision fp16 or fp32")
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        log.warning("this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 may be slower than fp32 here")
    return functools.partial(torch.autocast, device.type, dtype=dtype)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AVX512-BF16 or AMX (oneDNN runs bf16 natively)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextlib.contextmanager
def tf32() -> Iterator[None]:
    """CUDA convolutions (cuDNN) and matrix products in TF32 inside the block, the switches as they were after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
