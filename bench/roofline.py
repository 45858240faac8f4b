"""What the machine can do, so that speed reads as a share of a limit: the CPU and its flags, and
the throughput of the network's own convolutions run alone (the shapes one propagation step calls
at this size, in the path's memory format)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.stm import STM, MemoryEntry

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    """Model name, the flags that decide fp32/bf16 speed, logical CPUs, torch threads."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": name, "flags": [f for f in CPU_FLAGS if f in flags], "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }  # fmt: skip


def steady_step(model: STM, frame: torch.Tensor, probs: torch.Tensor, fixed: MemoryEntry, autocast) -> None:
    """One steady-state propagation step: memorise the previous frame, segment the next against a
    keyframe and that frame (T = 2), as every frame of a part from its third on does."""
    with autocast():
        previous = model.memorize(frame, probs)
        model.segment(frame, [fixed, previous])


@dataclass(frozen=True)
class ConvCall:
    """A convolution as the network calls it: input shape and the layer's settings."""

    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: tuple[int, int]
    padding: tuple[int, int]
    bias: bool

    def flops(self) -> int:
        batch, _, height, width = self.input_shape
        out_c, in_c, kh, kw = self.weight_shape
        out_h = (height + 2 * self.padding[0] - kh) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return 2 * batch * out_c * out_h * out_w * in_c * kh * kw


def conv_calls(model: STM, frame: torch.Tensor, probs: torch.Tensor, autocast) -> Counter:
    """The convolutions one steady-state step calls, with how often each shape is called."""
    calls: Counter = Counter()

    def record(module: nn.Conv2d, inputs, _output) -> None:
        calls[ConvCall(tuple(inputs[0].shape), tuple(module.weight.shape), module.stride, module.padding,
                       module.bias is not None)] += 1  # fmt: skip

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            with autocast():
                fixed = model.memorize(frame, probs)
            calls.clear()
            steady_step(model, frame, probs, fixed, autocast)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def conv_peak(
    calls: Counter,
    device: torch.device,
    memory_format: torch.memory_format,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
) -> dict:
    """The step's convolutions run alone, each shape ``repeats`` times (median): their FLOPs over
    their time (the throughput the network would have if nothing but its convolutions ran, at
    these shapes on this machine), and the best single shape."""
    total_flops = total_seconds = 0.0
    best = 0.0
    with torch.inference_mode():
        for call, count in calls.items():
            x = torch.randn(call.input_shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
            weight = torch.randn(call.weight_shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
            bias = torch.randn(call.weight_shape[0], device=device, dtype=dtype) if call.bias else None

            def run(x=x, weight=weight, bias=bias, call=call) -> None:
                F.conv2d(x, weight, bias, call.stride, call.padding)

            seconds = _median_time(run, device, repeats)
            total_flops += count * call.flops()
            total_seconds += count * seconds
            best = max(best, call.flops() / seconds)
    return {"gflops_per_s": total_flops / total_seconds / 1e9, "best_shape_gflops_per_s": best / 1e9,
            "conv_gflop_per_step": total_flops / 1e9, "conv_seconds_per_step": total_seconds}  # fmt: skip


def _median_time(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    run()  # warm-up: oneDNN builds its kernel for the shape
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
