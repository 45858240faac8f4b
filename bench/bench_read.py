#!/usr/bin/env python3
"""The memory read at HD sizes and growing memories: the fused read (torch's
scaled_dot_product_attention, what the bounded read takes beyond its budget) with one value head
of 512 or four of 128 and in fp32 or half precision, against the published naive read (the whole
affinity at once; skipped where the affinity alone would exceed --naive_limit_gib); --loop adds
the hand-written online-softmax loop the fused read replaced (kept here only for that comparison).

usage:
  python -m bench.bench_read [--sizes 480x864,1088x1920] [--steps 2,8,32] [--runs 3] [--device cpu]
                             [--heads 1,4] [--dtypes fp32,bf16] [--loop]

Random keys and values of the read's real shapes (2 objects, 128 key and 512 value channels at
stride 16 of the frame; keys scaled like trained ones, so the softmax is peaked). Per size and T:
the median seconds of --runs reads after one warm-up (a single run where a read takes over 10 s),
the memory each read took above what was held before it (the resident set sampled on the CPU, the
allocator's peak on CUDA; the memory entries themselves are held before and not counted: for the
fused read in a MemoryStack, as a propagation holds them, so it reads them without a copy), and the
largest absolute difference from the naive read (from the first fused variant where the naive read
is skipped). On CUDA the default compares 1 and 4 heads in fp32 and bf16: which kernel torch can
take depends on it (one head of 512: only the memory-efficient one; four of 128: flash and cuDNN
attention too, in half precision).
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from bench.memory import PeakMemory, ensure_malloc_settings
from bench.roofline import cpu_info
from model.stm import (
    KEY_DIM,
    NETWORK_STRIDE,
    OBJECTS,
    VALUE_DIM,
    MemoryEntry,
    MemoryStack,
    fused_value_heads,
    read_memory_fused,
    read_memory_naive,
)
from utils.device import prepare_device, resolve_device
from utils.precision import PRECISIONS


@torch.inference_mode()
def read_memory_loop(memory, query_key, query_value, chunk_bytes: int = 64 * 2**20) -> torch.Tensor:
    """The online read as it was before the fused one: a running softmax, one entry at a time,
    query positions in blocks whose scores fit ``chunk_bytes`` (fp32 inputs)."""
    objects, key_dim, height, width = query_key.shape
    positions = height * width
    query = query_key.reshape(objects, key_dim, positions).transpose(1, 2) * (1.0 / math.sqrt(key_dim))
    entry_positions = memory[0].keys.shape[-2] * memory[0].keys.shape[-1]
    rows = max(1, min(positions, chunk_bytes // (4 * objects * entry_positions)))
    blocks = []
    for first in range(0, positions, rows):
        q = query[:, first : first + rows]
        running_max = running_sum = read = None
        for entry in memory:
            k = entry.keys.reshape(objects, key_dim, -1)
            v = entry.values.reshape(objects, entry.values.shape[1], -1).transpose(1, 2)
            scores = torch.bmm(q, k)
            entry_max = scores.amax(dim=2)
            new_max = entry_max if running_max is None else torch.maximum(running_max, entry_max)
            weights = torch.exp(scores - new_max.unsqueeze(2))
            contribution = torch.bmm(weights, v)
            if read is None:
                running_sum, read = weights.sum(dim=2), contribution
            else:
                rescale = torch.exp(running_max - new_max)
                running_sum = running_sum * rescale + weights.sum(dim=2)
                read = read * rescale.unsqueeze(2) + contribution
            running_max = new_max
        blocks.append(read / running_sum.unsqueeze(2))
    read = torch.cat(blocks, dim=1).transpose(1, 2).reshape(objects, -1, height, width)
    return torch.cat([read, query_value], dim=1)


def random_memory(steps: int, height: int, width: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = height // NETWORK_STRIDE, width // NETWORK_STRIDE
    objects = len(OBJECTS)

    def key():
        return (torch.randn(objects, KEY_DIM, h, w, generator=g) * 2).to(device)

    memory = [MemoryEntry(key(), torch.randn(objects, VALUE_DIM, h, w, generator=g).to(device)) for _ in range(steps)]
    return memory, key(), torch.randn(objects, VALUE_DIM, h, w, generator=g).to(device)


def timed(read, args, device: torch.device, runs: int) -> tuple[float, int, torch.Tensor]:
    """(median seconds, peak bytes above the start, the output) of ``read(*args)``."""

    def once():
        start = time.perf_counter()
        with torch.inference_mode():
            out = read(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, out

    with PeakMemory(device) as peak:
        first, out = once()
    seconds = [first]
    if first < 10:
        seconds = [once()[0] for _ in range(runs)]
    return statistics.median(seconds), peak.bytes, out.float().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="480x864,1088x1920", help="HEIGHTxWIDTH,... (multiples of 16)")
    parser.add_argument("--steps", default="2,8,32", help="memory entries T")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--heads", default=None, help="value heads of the fused read, comma list of 1 and 4 "
                        "(default: 1,4 on CUDA, the device's default elsewhere)")  # fmt: skip
    parser.add_argument("--dtypes", default=None, help="what the fused read computes in, comma list of fp32, bf16, "
                        "fp16 (default: fp32,bf16 on CUDA, fp32 elsewhere)")  # fmt: skip
    parser.add_argument("--loop", action="store_true", help="also time the hand-written loop the fused read replaced")
    parser.add_argument("--naive_limit_gib", type=float, default=6.0, help="skip the naive read above this affinity")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        ensure_malloc_settings()  # freed buffers leave the resident set at once: exact peaks
    prepare_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    heads = [int(h) for h in (args.heads or ("1,4" if cuda else str(fused_value_heads(device)))).split(",")]
    dtypes = [PRECISIONS[d] for d in (args.dtypes or ("fp32,bf16" if cuda else "fp32")).split(",")]
    dtypes = [torch.float32 if d is None else d for d in dtypes]
    where = torch.cuda.get_device_name(device) if cuda else cpu_info()
    print(f"# memory read on {where}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    variants = [(h, d) for d in dtypes for h in heads]
    names = [f"{h} head{'s' if h > 1 else ''} {str(d).removeprefix('torch.')}" for h, d in variants]
    print(
        f"| size | T | {' | '.join(f'{n} s' for n in names)} |{' loop s |' if args.loop else ''} naive s | "
        f"{' | '.join(f'{n} MiB' for n in names)} | naive MiB | {' | '.join(f'{n} max diff' for n in names)} |"
    )
    print("|---" * (2 + 3 * len(names) + 2 + args.loop) + "|")
    for size in args.sizes.split(","):
        height, width = map(int, size.split("x"))
        for steps in map(int, args.steps.split(",")):
            memory, query_key, query_value = random_memory(steps, height, width, device)
            stack = MemoryStack(steps)  # as a propagation holds its memory: the fused read copies nothing
            stacked = [stack.add(entry) for entry in memory]
            positions = (height // NETWORK_STRIDE) * (width // NETWORK_STRIDE)
            affinity_gib = 4 * len(OBJECTS) * steps * positions**2 / 2**30
            fused = [
                timed(read_memory_fused, (stacked, query_key, query_value, h, d), device, args.runs)
                for h, d in variants
            ]
            loop_cell = ""
            if args.loop:
                loop_s, _, _ = timed(read_memory_loop, (memory, query_key, query_value), device, args.runs)
                loop_cell = f" {loop_s:.3f} |"
            if affinity_gib <= args.naive_limit_gib:
                naive_s, naive_b, reference = timed(read_memory_naive, (memory, query_key, query_value), device,
                                                    args.runs)  # fmt: skip
                naive_cells, against = (f"{naive_s:.3f}", f"{naive_b / 2**20:.0f}"), ""
            else:
                naive_cells = (f"skipped ({affinity_gib:.0f} GiB affinity)", "-")
                reference, against = fused[0][2], f" (vs {names[0]})"
            diffs = [f"{(out - reference).abs().max().item():.1e}{against}" for _, _, out in fused]
            print(f"| {width}x{height} | {steps} | {' | '.join(f'{s:.4f}' for s, _, _ in fused)} |{loop_cell} "
                  f"{naive_cells[0]} | {' | '.join(f'{b / 2**20:.0f}' for _, b, _ in fused)} | {naive_cells[1]} | "
                  f"{' | '.join(diffs)} |", flush=True)  # fmt: skip
            del memory, stack, stacked, fused, reference


if __name__ == "__main__":
    main()
