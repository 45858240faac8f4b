#!/usr/bin/env python3
"""What the GPU check records before it times anything: the machine (GPU, torch, CUDA and cuDNN
versions), which attention kernel torch takes for the memory read's shapes, and the host-device
synchronisations left in a propagation's steady state.

usage:
  python -m bench.gpu_facts [--inputs DIR] [--device cuda:0] [--path fast-bf16] [--json FILE]

Kernels: the fused read (``model.stm.read_memory_fused``) on random keys and values of the read's
shapes at the clip's size (2 objects, T = 2 entries), with one value head of 512 and four of 128,
in fp32 and in half precision: the kernels the profiler saw, and which of torch's attention
backends (flash, memory-efficient, cuDNN, math) accept the inputs when they are the only one
allowed. Syncs: a propagation of the clip (DIR from ``bench.gpu_inputs``; without it a small
generated one) on --path; after its first few visits (cuDNN's autotuning, the allocator's first
blocks), a few more visits run under ``torch.cuda.set_sync_debug_mode("warn")`` and every
synchronising call is listed with where it came from; on every device the operators that wait for
a GPU when called on one (``.item()``, ``nonzero``, indexing with a tensor of indices) are listed
the same way, so the CPU dry run checks the same code.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import platform
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.bench_propagation import PATHS
from config import load_config
from dataset.clip import check_sizes, scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.driver import configure_model, propagate_clip
from inference.options import PropagationOptions
from model.checkpoint import load_checkpoint
from model.stm import KEY_DIM, NETWORK_STRIDE, OBJECTS, READ_HEADS, STM, VALUE_DIM, MemoryEntry, read_memory_fused
from model.weights import parity_state_dict
from utils.device import prepare_device, resolve_device

REPO = Path(__file__).resolve().parents[1]
# Operators that make the host wait for a GPU: a value read back, a size known only on the device,
# or an index tensor copied over first.
WAITING_OPERATORS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique",
                     "aten.is_nonzero", "aten.equal", "aten.index.Tensor", "aten.index_put")  # fmt: skip


def versions(device: torch.device) -> dict:
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                  "gpu_memory_gib": round(props.total_memory / 2**30, 1)}  # fmt: skip
    else:
        facts["cpu"] = platform.processor() or platform.machine()
    return facts


def read_inputs(height: int, width: int, device: torch.device, steps: int = 2):
    g = torch.Generator().manual_seed(0)
    h, w = height // NETWORK_STRIDE, width // NETWORK_STRIDE
    objects = len(OBJECTS)
    memory = [
        MemoryEntry((torch.randn(objects, KEY_DIM, h, w, generator=g) * 2).to(device),
                    torch.randn(objects, VALUE_DIM, h, w, generator=g).to(device))
        for _ in range(steps)
    ]  # fmt: skip
    key = (torch.randn(objects, KEY_DIM, h, w, generator=g) * 2).to(device)
    return memory, key, torch.randn(objects, VALUE_DIM, h, w, generator=g).to(device)


def attention_kernels(height: int, width: int, device: torch.device) -> list[dict]:
    """Per (heads, dtype): the attention kernels the profiler saw, and the backends that run alone."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    memory, key, value = read_inputs(height, width, device)
    dtypes = [torch.float32, torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.float32]
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}  # fmt: skip
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    rows = []
    for dtype in dtypes:
        for heads in READ_HEADS:
            with torch.inference_mode():
                read_memory_fused(memory, key, value, heads, dtype)  # warm-up
                with profile(activities=activities) as prof:
                    read_memory_fused(memory, key, value, heads, dtype)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                names = sorted({e.key for e in prof.key_averages() if any(
                    word in e.key.lower() for word in ("attention", "fmha", "flash", "sdpa", "cudnn"))})  # fmt: skip
                accepted = []
                for name, backend in backends.items():
                    try:
                        with warnings.catch_warnings(), sdpa_kernel([backend]):
                            warnings.simplefilter("ignore")
                            read_memory_fused(memory, key, value, heads, dtype)
                        accepted.append(name)
                    except RuntimeError:
                        pass
            rows.append({"heads": heads, "dtype": str(dtype).removeprefix("torch."), "kernels": names,
                         "backends_that_run_alone": accepted})  # fmt: skip
    return rows


def where_from() -> str:
    """The innermost frame of this project's code (not this bench) on the stack."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename)
        if REPO in path.parents and "site-packages" not in path.parts and path.name != Path(__file__).name:
            return f"{path.relative_to(REPO)}:{frame.lineno} {frame.name}: {(frame.line or '').strip()[:80]}"
    return "(outside the project)"


class WaitingOperators(TorchDispatchMode):
    """Counts the calls of WAITING_OPERATORS by where they came from."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = f"aten.{func.__name__}" if not str(func).startswith("aten.") else str(func)
        if name.startswith(WAITING_OPERATORS) and (
            "index" not in name or any(isinstance(t, torch.Tensor) for t in tree_leaves(args[1:]))
        ):
            self.calls[f"{name} at {where_from()}"] += 1
        return func(*args, **(kwargs or {}))


def steady_state_syncs(clip, model, options, device: torch.device, warm_up: int = 3, watched: int = 4) -> dict:
    """Propagate ``clip``; after ``warm_up`` visits watch the next ``watched`` for synchronisations."""
    seen = {"visits": 0}
    operators = WaitingOperators()
    cuda_syncs: collections.Counter[str] = collections.Counter()
    stack = contextlib.ExitStack()
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message).lower():
            cuda_syncs[f"{str(message).splitlines()[0][:80]} at {where_from()}"] += 1
        else:
            show(message, category, filename, lineno, file, line)

    def on_step(part, step, probs) -> None:
        if step.local_index == 0:
            return
        seen["visits"] += 1
        if seen["visits"] == warm_up:
            stack.enter_context(operators)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                warnings.showwarning = record
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
        elif seen["visits"] == warm_up + watched:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                warnings.showwarning = show
            stack.close()

    with tempfile.TemporaryDirectory(prefix="gpu-facts-") as tmp:
        try:
            propagate_clip(model, clip, Path(tmp), options, device, on_step=on_step)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = show
            stack.close()
    return {"visits_watched": max(0, min(watched, seen["visits"] - warm_up)),
            "cuda_syncs": dict(cuda_syncs) if device.type == "cuda" else None,
            "waiting_operators": dict(operators.calls)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default=None, help="a folder of bench.gpu_inputs (default: a small generated clip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--path", default=None, help=f"the path whose steady state is watched ({', '.join(PATHS)}; "
                        "default fast-bf16 on CUDA, fast-fp32 elsewhere)")  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the facts here as JSON")
    args = parser.parse_args()
    device = resolve_device(args.device)
    prepare_device(device, load_config(None).SYSTEM)
    facts = {"versions": versions(device)}
    print("# " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-facts-clip-") as tmp:
        if args.inputs:
            clip = scan_clip(Path(args.inputs) / "clip")
            weights = Path(args.inputs) / "parity.pth"
        else:
            sample = make_synthetic_clip(Path(tmp) / "ws", "c", num_frames=10, size=(64, 96), keyframes=(0, 9), seed=1)
            clip, weights = scan_clip(sample.folder), None
        height, width = check_sizes(clip)
        padded = (-(-height // NETWORK_STRIDE) * NETWORK_STRIDE, -(-width // NETWORK_STRIDE) * NETWORK_STRIDE)
        facts["attention"] = attention_kernels(*padded, device)
        print(f"\n## the memory read's attention kernel at {width}x{height} (T = 2)")
        print("| heads | dtype | kernels the profiler saw | backends that run alone |")
        print("|---|---|---|---|")
        for row in facts["attention"]:
            print(f"| {row['heads']} | {row['dtype']} | {', '.join(row['kernels']) or '-'} | "
                  f"{', '.join(row['backends_that_run_alone'])} |", flush=True)  # fmt: skip
        path = args.path or ("fast-bf16" if device.type == "cuda" else "fast-fp32")
        options = PropagationOptions(mem_every=5, **PATHS[path])
        model = STM()
        if weights is not None:
            load_checkpoint(model, weights)
        else:
            model.load_state_dict(parity_state_dict(model))
        model = configure_model(model, options, device)
        facts["syncs"] = steady_state_syncs(clip, model, options, device)
    syncs = facts["syncs"]
    print(f"\n## synchronisations in the steady state of {path} ({syncs['visits_watched']} visits watched)")
    if syncs["cuda_syncs"] is not None:
        print(f"torch.cuda.set_sync_debug_mode: {len(syncs['cuda_syncs'])} place(s)")
        for where, count in sorted(syncs["cuda_syncs"].items(), key=lambda item: -item[1]):
            print(f"  {count:>4}x  {where}")
    print(f"operators that wait for a GPU: {len(syncs['waiting_operators'])} place(s)")
    for where, count in sorted(syncs["waiting_operators"].items(), key=lambda item: -item[1]):
        print(f"  {count:>4}x  {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(facts, indent=1))
    if syncs["visits_watched"] == 0:
        sys.exit("the clip was too short to watch a steady state")


if __name__ == "__main__":
    main()
