#!/usr/bin/env python3
"""Seconds per finetuning step (forward, backward, optimizer) and peak memory, per variant.

usage: python -m bench.bench_finetune [--size 576x704] [--crop 512x512] [--steps 4] [--variants fp32,...]

Trains on a generated clip's keyframe with the published step (frozen batch norm, Adam), from
the demo's random start: the same work per step as with the released weights. Variants:
fp32 (TRAIN.PRECISION fp32), channels_last (TRAIN.CHANNELS_LAST), bf16 and fp16
(TRAIN.PRECISION), compiled (torch.compile of the training step; its first step compiles).
Variants alternate within each round; the median over rounds is reported, after one warm-up step
per variant (its seconds are printed too), with the peak resident memory of the process. Run it
alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dataset.clip import scan_clip
from dataset.finetune import KeyframeClips
from dataset.synthetic import make_synthetic_clip
from model.stm import STM
from model.weights import trainable_random_init
from training.optim import make_optimizer, select_parameters
from training.step import TrainingStep
from utils.device import prepare_device, resolve_device
from utils.precision import autocast_for, cpu_has_fast_bf16

VARIANTS = {  # name -> (precision, channels_last, torch.compile)
    "fp32": ("fp32", False, False),
    "channels_last": ("fp32", True, False),
    "bf16": ("bf16", False, False),
    "fp16": ("fp16", False, False),
    "compiled": ("fp32", False, True),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="576x704", help="HEIGHTxWIDTH of the generated clip")
    parser.add_argument("--crop", default="512x512", help="HEIGHTxWIDTH of the training crops")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (rounds)")
    parser.add_argument("--variants", default="fp32", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    args = parse_args()
    height, width = (int(x) for x in args.size.lower().split("x"))
    crop_h, crop_w = (int(x) for x in args.crop.lower().split("x"))
    device = resolve_device(args.device)
    prepare_device(device)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    with tempfile.TemporaryDirectory() as work:
        sample = make_synthetic_clip(Path(work), "ft", 2, (height, width), keyframes=(0,), seed=1, unknown_width=25)
        clip = scan_clip(sample.folder)
        data = KeyframeClips(clip, (crop_w, crop_h), min_unknown=400, length=args.steps + 1, seed=0)
        batches = [data[i] for i in range(args.steps + 1)]
    torch.manual_seed(0)
    start = STM()
    trainable_random_init(start)
    setups = {}
    for name in names:
        precision, channels_last, compiled = VARIANTS[name]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(start).to(device, memory_format=memory_format).eval()
        optimizer = make_optimizer("adam", select_parameters(model, False), 1e-5, 1e-4)
        weights = torch.tensor([1.0, 1.0, 1.0], device=device)
        step = TrainingStep(model, weights, memory_format, autocast_for(precision, device))
        setups[name] = (torch.compile(step) if compiled else step, optimizer)

    def one_step(name: str, batch: dict) -> float:
        step_module, optimizer = setups[name]
        frames, labels = batch["frames"][None].to(device), batch["labels"][None].to(device)
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = step_module(frames, labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    times = {name: [] for name in names}
    warmup = {}
    for name in names:
        warmup[name] = one_step(name, batches[0])  # allocations, oneDNN caches; compiling
        print(f"# first step {name}: {warmup[name]:.1f} s", flush=True)
    for round_ in range(args.steps):
        for name in names:
            times[name].append(one_step(name, batches[round_ + 1]))
            print(f"# round {round_ + 1}/{args.steps} {name}: {times[name][-1]:.2f} s", flush=True)
    # Peak memory of the whole process (all variants together; CUDA: the allocator's peak).
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"\n{where}, native bf16: {cpu_has_fast_bf16() if device.type == 'cpu' else 'n/a'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; crops {crop_h}x{crop_w}")  # fmt: skip
    print(f"{'variant':<15}{'s/step':>8}{'x ' + names[0]:>16}{'first step s':>14}")
    base = statistics.median(times[names[0]])
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<15}{median:>8.2f}{base / median:>16.2f}{warmup[name]:>14.1f}")
    print(f"peak memory of the process: {peak / 2**20:.0f} MiB")
    for name in names:
        seconds = statistics.median(times[name])
        record = {"variant": name, "device": where, "crop": args.crop, "seconds_per_step": seconds,
                  "process_peak_bytes": peak}  # fmt: skip
        print(json.dumps(record))


if __name__ == "__main__":
    main()
