"""Reduced precision and memory layout for the fast paths."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable

import torch

from utils.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``precision`` on ``device`` (fp32: a null context).

    Convolutions and matrix products run in bf16/fp16; softmax, the memory read's scores and the
    outputs stay fp32.
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
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
