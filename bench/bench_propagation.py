#!/usr/bin/env python3
"""Speed, memory and agreement of the propagation paths against the naive (published) path.

usage:
  python bench/bench_propagation.py [--size 480x864] [--frames 6] [--runs 3] [--paths ...]
  python bench/bench_propagation.py --mode memory [--size 480x864] [--steps 2,8,32]

clip mode: propagates a generated clip with each path, alternating paths within each of --runs
rounds in one process, and prints a table plus one JSON line per path (frames/s is the median
over runs; agreement is against the naive fp32 path on the same clip).
memory mode: the peak memory and time of one segment step against T memory frames ("read MiB":
memory the step takes above what was held before it), and what the bank of T entries holds.
Run it alone on the machine: other processes distort both time and memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memory import PeakMemory, ensure_malloc_settings
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.driver import configure_model, propagate_clip
from inference.options import PropagationOptions
from model.checkpoint import load_checkpoint
from model.stm import STM
from model.weights import parity_state_dict
from utils.device import prepare_device, resolve_device
from utils.logs import setup_logging
from utils.precision import autocast_for, cpu_has_fast_bf16

# name -> (naive, fast, precision)
PATHS = {
    "naive": (True, False, "fp32"),
    "fp32": (False, False, "fp32"),
    "fast-fp32": (False, True, "fp32"),
    "fast-bf16": (False, True, "bf16"),
    "fast-fp16": (False, True, "fp16"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("clip", "memory"), default="clip")
    parser.add_argument("--size", default="480x864", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=6, help="clip mode: frames (keyframe 0, one tail part)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--paths", default=None, help=f"comma list of {', '.join(PATHS)} (default: all that pay off)")
    parser.add_argument("--mem_every", type=int, default=5)
    parser.add_argument("--steps", default="2,8,32", help="memory mode: memory sizes T")
    parser.add_argument("--load", default=None, help="checkpoint (default: the parity weights, built here)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="also append the JSON lines to this file")
    return parser.parse_args()


def default_paths(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return list(PATHS)
    paths = ["naive", "fp32", "fast-fp32"]
    if cpu_has_fast_bf16():
        paths.append("fast-bf16")
    return paths


def build_model(args: argparse.Namespace, options: PropagationOptions, device: torch.device) -> STM:
    model = STM()
    if args.load:
        load_checkpoint(model, args.load)
    else:
        model.load_state_dict(parity_state_dict(model))
    return configure_model(model, options, device)


@dataclass
class PathResult:
    seconds: list[float]
    peaks: list[int]
    probs: dict[tuple[int, int], np.ndarray]


def emit(record: dict, json_path: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if json_path:
        with open(json_path, "a") as handle:
            handle.write(line + "\n")


def clip_mode(args: argparse.Namespace, device: torch.device, height: int, width: int) -> None:
    paths = args.paths.split(",") if args.paths else default_paths(device)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        sys.exit(f"unknown paths {unknown}; choose from {list(PATHS)}")
    if "naive" not in paths:
        paths.insert(0, "naive")
    work = Path(tempfile.mkdtemp(prefix="bench_"))
    try:
        sample = make_synthetic_clip(work / "ws", "bench", args.frames, (height, width), keyframes=(0,), seed=2)
        clip = scan_clip(sample.folder)
        models, options = {}, {}
        for name in paths:
            naive, fast, precision = PATHS[name]
            options[name] = PropagationOptions(mem_every=args.mem_every, naive=naive, fast=fast, precision=precision)
            models[name] = build_model(args, options[name], device)
        results = {name: PathResult([], [], {}) for name in paths}
        for run in range(args.runs):
            for name in paths:
                probs = results[name].probs

                def keep(part: int, step, image: np.ndarray, probs=probs) -> None:
                    probs[part, step.frame] = image

                save = work / f"out_{name}"
                shutil.rmtree(save, ignore_errors=True)
                with PeakMemory(device) as peak:
                    start = time.perf_counter()
                    propagate_clip(models[name], clip, save, options[name], device, on_step=keep if run == 0 else None)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds = time.perf_counter() - start
                results[name].seconds.append(seconds)
                results[name].peaks.append(peak.bytes)
                print(
                    f"# run {run + 1}/{args.runs} {name}: {seconds:.1f} s, peak {peak.bytes / 2**20:.0f} MiB",
                    flush=True,
                )
        frames = args.frames
        reference = results["naive"]
        naive_fps = frames / statistics.median(reference.seconds)
        rows = []
        for name in paths:
            result = results[name]
            fps = frames / statistics.median(result.seconds)
            agree, worst = [], 0.0
            for key, probs in result.probs.items():
                ref = reference.probs[key]
                agree.append(float((probs.argmax(2) == ref.argmax(2)).mean()))
                worst = max(worst, float(np.abs(probs - ref).max()))
            record = {
                "path": name,
                "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
                "size": f"{height}x{width}",
                "frames": frames,
                "frames_per_s": round(fps, 4),
                "ratio_vs_naive": round(fps / naive_fps, 3),
                "peak_memory_bytes": int(max(result.peaks)),
                "label_agreement_vs_fp32": round(float(np.mean(agree)), 6),
                "max_prob_diff_vs_fp32": round(worst, 6),
            }
            rows.append(record)
        print(f"\n{'path':<11}{'frames/s':>10}{'x naive':>9}{'peak MiB':>10}{'agree':>10}{'max dP':>9}")
        for r in rows:
            print(
                f"{r['path']:<11}{r['frames_per_s']:>10.3f}{r['ratio_vs_naive']:>9.2f}"
                f"{r['peak_memory_bytes'] / 2**20:>10.0f}{r['label_agreement_vs_fp32']:>10.4%}"
                f"{r['max_prob_diff_vs_fp32']:>9.4f}"
            )
        print()
        for r in rows:
            emit(r, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory_mode(args: argparse.Namespace, device: torch.device, height: int, width: int) -> None:
    steps = [int(t) for t in args.steps.split(",")]
    paths = args.paths.split(",") if args.paths else ["naive", "fp32"]
    torch.manual_seed(0)
    frame = torch.randn(1, 3, height, width, device=device)
    probs = torch.softmax(torch.randn(1, 3, height, width, device=device), dim=1)
    rows = []
    for name in paths:
        naive, fast, precision = PATHS[name]
        options = PropagationOptions(naive=naive, fast=fast, precision=precision)
        model = build_model(args, options, device)
        autocast = autocast_for(precision, device)
        memory_format = options.memory_format
        query = frame.contiguous(memory_format=memory_format)
        with torch.inference_mode():
            with autocast():
                entry = model.memorize(query, probs)
            entry_bytes = entry.keys.nbytes + entry.values.nbytes  # what the bank holds per memorised frame
            base = None
            for t in steps:
                memory = [type(entry)(entry.keys.clone(), entry.values.clone()) for _ in range(t)]
                times, peaks = [], []
                for _ in range(args.runs):
                    with PeakMemory(device) as peak:
                        start = time.perf_counter()
                        with autocast():
                            model.segment(query, memory)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        times.append(time.perf_counter() - start)
                    peaks.append(peak.bytes)
                record = {
                    "mode": "memory", "path": name, "device": str(device), "size": f"{height}x{width}", "T": t,
                    "seconds": round(statistics.median(times), 4), "peak_memory_bytes": int(max(peaks)),
                    "bank_bytes": t * entry_bytes,
                }  # fmt: skip
                base = base or record["peak_memory_bytes"]
                record["memory_vs_first_T"] = round(record["peak_memory_bytes"] / base, 3)
                rows.append(record)
                print(f"# {name} T={t}: {record['seconds']:.2f} s, peak {record['peak_memory_bytes'] / 2**20:.0f} MiB")
                del memory
    print(f"\n{'path':<8}{'T':>5}{'seconds':>10}{'read MiB':>10}{'x first T':>11}{'bank MiB':>10}")
    for r in rows:
        print(
            f"{r['path']:<8}{r['T']:>5}{r['seconds']:>10.2f}{r['peak_memory_bytes'] / 2**20:>10.0f}"
            f"{r['memory_vs_first_T']:>11.2f}{r['bank_bytes'] / 2**20:>10.0f}"
        )
    print()
    for r in rows:
        emit(r, args.json)


def main() -> None:
    ensure_malloc_settings()
    args = parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)  # the table is the output; keep per-run logs quiet
    height, width = (int(x) for x in args.size.lower().split("x"))
    device = resolve_device(args.device)
    prepare_device(device)
    if args.mode == "clip":
        clip_mode(args, device, height, width)
    else:
        memory_mode(args, device, height, width)


if __name__ == "__main__":
    main()
