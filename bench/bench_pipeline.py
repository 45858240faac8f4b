#!/usr/bin/env python3
"""The propagation's I/O alone: how many segment visits per second the pipeline around the
network sustains (frames read, decoded and padded ahead, copied to the device, probabilities
copied back, quantised, PNG-encoded and written atomically), with a stand-in network that
answers at once.

usage:
  python -m bench.bench_pipeline [--size 1088x1920] [--frames 40] [--threads 1,2,all] [--runs 3] [--device cpu]

A generated clip of --frames PNG frames with keyframes at both ends (2 * (frames - 1) visits, as
between two keyframes) goes through the real driver (``inference.driver.propagate_clip``: the
parts plan, the frame reader threads, the writer threads, the result folder); only the network is
replaced: its query features are the padded frame itself, its memory entries are empty and its
"logits" are the frame's colours, so the PNGs hold real image content (a blank image would encode
unrealistically fast). Per thread count (``--n_threads``: that many frame readers and as many PNG
writers): visits/s over the whole propagation (median of --runs, after one warm-up run), and the
share of that time the main thread spent in the stand-in's steps (where a real network would run).
On the CPU the stand-in's tensor work shares the cores with the I/O threads; on a GPU it does not.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.roofline import cpu_info
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.driver import propagate_clip
from inference.options import PropagationOptions
from model.stm import NETWORK_STRIDE, MemoryEntry, QueryFeatures, crop_padding, pad_to_multiple
from utils.device import prepare_device, resolve_device


class StandIn(nn.Module):
    """The STM's interface, answering at once: what remains of a visit's time is the pipeline's."""

    memory_read, share_skips = "naive", True  # "naive": no memory stack for its empty entries

    def __init__(self) -> None:
        super().__init__()
        self.step_seconds = 0.0

    def memorize(self, frame: torch.Tensor, probs: torch.Tensor) -> MemoryEntry:
        empty = frame.new_zeros(2, 0, 1, 1)
        return MemoryEntry(empty, empty)

    def encode_query(self, frame: torch.Tensor) -> QueryFeatures:
        start = time.perf_counter()
        padded, pads = pad_to_multiple(frame, NETWORK_STRIDE)
        none = padded[:, :0]
        self.step_seconds += time.perf_counter() - start
        return QueryFeatures(padded, none, none, none, pads, skips_done=True)

    def segment(self, frame, memory, query: QueryFeatures) -> torch.Tensor:
        start = time.perf_counter()
        logits = crop_padding(query.key * 4.0, query.pads)  # the frame's colours as three classes' scores
        self.step_seconds += time.perf_counter() - start
        return logits


def run_once(clip_folder: Path, save: Path, threads: int, device: torch.device) -> tuple[float, int, float]:
    """(seconds, visits, seconds in the stand-in's steps) of one propagation into a fresh ``save``."""
    shutil.rmtree(save, ignore_errors=True)
    model = StandIn().to(device)
    options = PropagationOptions(mem_every=5, n_threads=threads, share_query_mib=0)
    visits = [0]

    def count(part, step, probs):
        visits[0] += 1

    start = time.perf_counter()
    propagate_clip(model, scan_clip(clip_folder), save, options, device, on_step=count)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, visits[0], model.step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1088x1920", help="HEIGHTxWIDTH of the generated frames")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", default="1,2,all", help="--n_threads values to try (all: one per core)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip", default=None, help="a clip folder to read instead of a generated one (its keyframes "
                        "as they are; --size and --frames are then its own)")  # fmt: skip
    args = parser.parse_args()
    device = resolve_device(args.device)
    prepare_device(device)
    height, width = map(int, args.size.split("x"))
    cores = os.cpu_count() or 1
    counts = sorted({cores if t == "all" else int(t) for t in args.threads.split(",")})
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# I/O pipeline, stand-in network on {where}; {cpu_info()}; {cores} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        if args.clip:
            folder = Path(args.clip)
            print(f"clip: {folder}")
        else:
            start = time.perf_counter()
            folder = make_synthetic_clip(root / "ws", "hd", num_frames=args.frames, size=(height, width),
                                         keyframes=(0, args.frames - 1), seed=4).folder  # fmt: skip
            print(f"clip: {args.frames} frames of {width}x{height} written in {time.perf_counter() - start:.1f} s")
        print("| --n_threads | visits | visits/s (median) | runs (s) | stand-in share |")
        print("|---|---|---|---|---|")
        for threads in counts:
            run_once(folder, root / "out", threads, device)  # warm-up: page cache, allocators
            runs = [run_once(folder, root / "out", threads, device) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in runs)
            visits = runs[0][1]
            share = statistics.median(r[2] / r[0] for r in runs)
            print(f"| {threads} | {visits} | {visits / seconds:.1f} | {', '.join(f'{r[0]:.2f}' for r in runs)} | "
                  f"{share:.0%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
