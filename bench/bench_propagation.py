#!/usr/bin/env python3
"""Speed, memory and agreement of the propagation paths against the naive (published) path, as a
share of what the machine can do.

usage:
  python -m bench.bench_propagation [--size 480x864] [--frames 6] [--runs 3] [--paths ...]
  python -m bench.bench_propagation --mode memory [--size 480x864] [--steps 2,8,32]
  python -m bench.bench_propagation --mode profile --paths fast-bf16 [--size 1088x1920] [--frames 4] [--clip DIR]

clip mode: propagates a generated clip with each path, alternating paths within each round in one
process: a warm-up round (which also compiles the compiled paths; its extra seconds are reported),
then --runs rounds whose medians are reported. Per path: frames/s; the FLOPs of propagating the
clip counted by torch, over its frames (GFLOP per frame, keyframe included), and the GFLOP/s they
make, as a share of the throughput of one step's convolutions run alone on this machine (same
shapes, channels_last fp32); the label agreement and largest probability difference against the
naive fp32 path on the same clip. --profile NAMES prints where one propagation of each spends its
time (torch profiler, operators by self time, convolutions summed, after a warm-up run).
profile mode (--mode profile --paths NAME): that profile for one path alone, on a generated clip.
It states the CPU (model, avx2 / avx512 / bf16 / AMX flags) or GPU. Peak memory here is the
resident set sampled above the start (malloc may keep freed buffers; memory mode is exact).
memory mode: the peak memory and time of one segment step against T memory frames ("read MiB":
memory the step takes above what was held before it), and what the bank of T entries holds.
Run it alone on the machine: other processes distort both time and memory.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from torch.utils.flop_counter import FlopCounterMode

from bench.memory import PeakMemory, ensure_malloc_settings
from bench.roofline import conv_calls, conv_peak, cpu_info
from config import load_config
from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.driver import configure_model, propagate_clip
from inference.options import PropagationOptions
from model.checkpoint import load_checkpoint
from model.stm import STM
from model.weights import parity_state_dict
from utils.device import prepare_device, resolve_device
from utils.logs import setup_logging
from utils.precision import autocast_for, cpu_has_fast_bf16

# name -> the PropagationOptions of the path
PATHS = {
    "naive": {"naive": True},
    "default": {},
    "default-unshared": {"share_query_mib": 0},
    "fast-fp32": {"fast": True},
    "fast-unshared": {"fast": True, "share_query_mib": 0},
    "fast-compiled": {"fast": True, "compile": True},
    "fast-bf16": {"fast": True, "precision": "bf16"},
    "fast-fp16": {"fast": True, "precision": "fp16"},
    "fast-tf32": {"fast": True, "precision": "tf32"},
    "compiled-bf16": {"fast": True, "compile": True, "precision": "bf16"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("clip", "memory", "profile"), default="clip")
    parser.add_argument("--size", default="480x864", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=6, help="clip mode: frames of the generated clip")
    parser.add_argument(
        "--keyframes", choices=("ends", "first"), default="ends", help="clip mode: keyframes at both ends (one "
        "segment, every frame between visited forward and backward: default) or only the first (one tail part)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--paths", default=None, help=f"comma list of {', '.join(PATHS)} (default: all that pay off)")
    parser.add_argument("--mem_every", type=int, default=5)
    parser.add_argument("--steps", default="2,8,32", help="memory mode: memory sizes T")
    parser.add_argument("--load", default=None, help="checkpoint (default: the parity weights, built here)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--profile", default=None, help="clip mode: where these paths (comma list) spend time")
    parser.add_argument("--clip", default=None, help="profile mode: the first --frames frames of this clip folder "
                        "(and the keyframes among them) instead of a generated clip")  # fmt: skip
    return parser.parse_args()


def default_paths(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return list(PATHS)
    paths = ["naive", "default-unshared", "default", "fast-unshared", "fast-fp32", "fast-compiled"]
    if cpu_has_fast_bf16():
        paths += ["fast-bf16", "compiled-bf16"]
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
    cache_bytes: int  # the most the shared query features took


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
        keyframes = (0, args.frames - 1) if args.keyframes == "ends" else (0,)
        sample = make_synthetic_clip(work / "ws", "bench", args.frames, (height, width), keyframes=keyframes, seed=2)
        clip = scan_clip(sample.folder)
        options = {name: PropagationOptions(mem_every=args.mem_every, **PATHS[name]) for name in paths}
        machine = limits(args, options, paths, device, height, width, clip, work)
        models = {name: build_model(args, options[name], device) for name in paths}
        results = {name: PathResult([], [], {}, 0) for name in paths}
        first = {}
        # round 0 warms up (and compiles); the medians are over the --runs rounds after it
        for run in range(args.runs + 1):
            for name in paths:
                probs = results[name].probs

                def keep(part: int, step, image: np.ndarray, probs=probs) -> None:
                    probs[part, step.frame] = image

                save = work / f"out_{name}"
                shutil.rmtree(save, ignore_errors=True)
                with PeakMemory(device) as peak:
                    start = time.perf_counter()
                    done = propagate_clip(models[name], clip, save, options[name], device,
                                          on_step=keep if run == 0 else None)  # fmt: skip
                    results[name].cache_bytes = max(results[name].cache_bytes, done.shared_peak_bytes)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds = time.perf_counter() - start
                if run == 0:
                    first[name] = seconds
                else:
                    results[name].seconds.append(seconds)
                    results[name].peaks.append(peak.bytes)
                print(f"# round {run}/{args.runs}{' (warm-up)' if run == 0 else ''} {name}: {seconds:.1f} s, "
                      f"peak {peak.bytes / 2**20:.0f} MiB", flush=True)  # fmt: skip
        rows = summarise(args, device, height, width, paths, options, results, first, machine)
        print_table(rows, machine)
        for r in rows:
            emit(r, args.json)
        for name in args.profile.split(",") if args.profile else []:
            profile(models[name], clip, options[name], device, work / "profile", name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def clip_flops(model: STM, clip, options: PropagationOptions, device: torch.device, save: Path) -> int:
    """FLOPs of propagating the whole clip (convolutions and matrix products, counted by torch)."""
    counter = FlopCounterMode(display=False)
    with counter:
        propagate_clip(model, clip, save, options, device)
    shutil.rmtree(save, ignore_errors=True)
    return counter.get_total_flops()


def limits(args, options, paths, device, height, width, clip, work) -> dict:
    """The machine, each path's FLOPs per frame (the clip's FLOPs over its frames, keyframe
    included), and the throughput of the step's convolutions run alone."""
    torch.manual_seed(0)
    frame = torch.randn(1, 3, height, width, device=device)
    probs = torch.softmax(torch.randn(1, 3, height, width, device=device), dim=1)
    machine = (
        cpu_info() if device.type == "cpu" else {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
    )
    machine["flops_per_frame"] = {}
    counted: dict[tuple, float] = {}
    for name in paths:
        eager = dataclasses.replace(options[name], compile=False)  # FLOPs are counted on the eager twin
        key = (eager.naive, eager.fast, eager.precision, eager.share_query_bytes(device) > 0)
        if key not in counted:
            model = build_model(args, eager, device)
            counted[key] = clip_flops(model, clip, eager, device, work / "flops") / len(clip)
        machine["flops_per_frame"][name] = counted[key]
    fast = dataclasses.replace(options.get("fast-fp32", PropagationOptions(fast=True)), compile=False, precision="fp32")
    model = build_model(args, fast, device)
    x = frame.contiguous(memory_format=fast.memory_format)
    calls = conv_calls(model, x, probs, autocast_for("fp32", device))
    machine["conv_peak"] = conv_peak(calls, device, torch.channels_last)
    return machine


def summarise(args, device, height, width, paths, options, results, first, machine) -> list[dict]:
    frames = args.frames
    reference = results["naive"]
    naive_fps = frames / statistics.median(reference.seconds)
    peak = machine["conv_peak"]["gflops_per_s"]
    rows = []
    for name in paths:
        result = results[name]
        seconds = statistics.median(result.seconds)
        fps = frames / seconds
        agree, worst = [], 0.0
        for key, probs in result.probs.items():
            ref = reference.probs[key]
            agree.append(float((probs.argmax(2) == ref.argmax(2)).mean()))
            worst = max(worst, float(np.abs(probs - ref).max()))
        gflop = machine["flops_per_frame"][name] / 1e9
        rows.append({
            "path": name,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "size": f"{height}x{width}", "frames": frames,
            "frames_per_s": round(fps, 4), "ratio_vs_naive": round(fps / naive_fps, 3),
            "gflop_per_frame": round(gflop, 1), "gflops_per_s": round(gflop * fps, 1),
            "share_of_conv_peak": round(gflop * fps / peak, 3),
            "warmup_extra_s": round(first[name] - seconds, 1),
            "peak_memory_bytes": int(max(result.peaks)), "shared_query_bytes": result.cache_bytes,
            "label_agreement_vs_fp32": round(float(np.mean(agree)), 6),
            "max_prob_diff_vs_fp32": round(worst, 6),
        })  # fmt: skip
    return rows


def print_table(rows: list[dict], machine: dict) -> None:
    where = machine.get("cpu") or machine.get("gpu")
    flags = ", ".join(machine.get("flags", [])) or "-"
    peak = machine["conv_peak"]
    print(f"\n{where}; flags: {flags}; {machine.get('torch_threads', '-')} torch threads; torch {machine['torch']}")
    print(f"the step's convolutions alone (channels_last fp32): {peak['gflops_per_s']:.0f} GFLOP/s "
          f"(best single shape {peak['best_shape_gflops_per_s']:.0f} GFLOP/s)")  # fmt: skip
    print(f"{'path':<17}{'frames/s':>9}{'x naive':>8}{'GFLOP/fr':>9}{'GFLOP/s':>9}{'of peak':>8}"
          f"{'warm-up s':>10}{'peak MiB':>9}{'cache MiB':>10}{'agree':>10}{'max dP':>8}")  # fmt: skip
    for r in rows:
        print(
            f"{r['path']:<17}{r['frames_per_s']:>9.3f}{r['ratio_vs_naive']:>8.2f}{r['gflop_per_frame']:>9.0f}"
            f"{r['gflops_per_s']:>9.0f}{r['share_of_conv_peak']:>8.0%}{r['warmup_extra_s']:>10.1f}"
            f"{r['peak_memory_bytes'] / 2**20:>9.0f}{r['shared_query_bytes'] / 2**20:>10.0f}"
            f"{r['label_agreement_vs_fp32']:>10.4%}"
            f"{r['max_prob_diff_vs_fp32']:>8.4f}"
        )
    print()


def device_kernel_us(events) -> float:
    """Microseconds the device was busy: the self time of the kernel rows only (device_type CUDA).
    The operator rows above them carry their kernels' time too; summing both counts it twice."""
    from torch.autograd import DeviceType

    return sum(e.self_device_time_total for e in events if e.device_type != DeviceType.CPU)


def profile(model: STM, clip, options: PropagationOptions, device: torch.device, save: Path, name: str) -> None:
    """Where one propagation of the clip spends its time, after an unprofiled warm-up run (cuDNN's
    autotuning and compiling happen there, as in a run's first frames): the top 20 operators by
    self time on the device (CUDA time on a GPU, CPU time elsewhere), the convolutions (eager or
    compiled) summed, and on a GPU its busy share (kernel time over the propagation's wall time)
    and peak memory."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    start = time.perf_counter()
    propagate_clip(model, clip, save / "warm-up", options, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    warm_up = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        propagate_clip(model, clip, save / "profiled", options, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    if device.type == "cuda":  # the operators that launched the kernels, by their kernels' time
        attr, total = "self_device_time_total", device_kernel_us(events)
        rows = [e for e in events if e.device_type == DeviceType.CPU]
    else:
        attr, rows = "self_cpu_time_total", list(events)
        total = sum(e.self_cpu_time_total for e in rows)
    conv = sum(getattr(e, attr) for e in rows if "conv" in e.key.lower())
    print(f"\nprofile of {name}: warm-up run {warm_up:.1f} s; profiled run {wall:.1f} s of wall time, "
          f"{total / 1e6:.1f} s of {'kernel' if device.type == 'cuda' else 'operator self'} time; "
          f"convolutions {conv / max(total, 1):.0%}")  # fmt: skip
    if device.type == "cuda":
        print(f"GPU busy {total / 1e6 / wall:.0%} of the propagation's wall time; peak memory "
              f"{torch.cuda.max_memory_reserved(device) / 2**30:.1f} GiB reserved")  # fmt: skip
    print(f"  {'share':>6}  {'ms':>9}  {'calls':>6}  operator")
    for event in sorted(rows, key=lambda e: getattr(e, attr), reverse=True)[:20]:
        print(f"  {getattr(event, attr) / max(total, 1):>6.1%}  {getattr(event, attr) / 1e3:>9.1f}  "
              f"{event.count:>6}x  {event.key[:70]}")  # fmt: skip
    print(flush=True)


def profile_mode(args: argparse.Namespace, device: torch.device, height: int, width: int) -> None:
    """--mode profile: one path's profile (--paths NAME) on a generated clip, nothing else."""
    names = args.paths.split(",") if args.paths else ["fast-bf16" if device.type == "cuda" else "fast-fp32"]
    if len(names) != 1 or names[0] not in PATHS:
        sys.exit(f"--mode profile takes one path of {list(PATHS)}, not {args.paths!r}")
    work = Path(tempfile.mkdtemp(prefix="bench_"))
    try:
        if args.clip:  # its first --frames frames and the keyframes among them, linked
            folder = work / "ws" / "bench"
            folder.mkdir(parents=True)
            for frame in sorted(Path(args.clip).glob(f"*{FRAME_SUFFIX}"))[: args.frames]:
                stem = frame.name.removesuffix(FRAME_SUFFIX)
                for path in (frame, frame.with_name(f"{stem}{TRIMAP_SUFFIX}")):
                    if path.exists():
                        (folder / path.name).symlink_to(path.resolve())
        else:
            keyframes = (0, args.frames - 1) if args.keyframes == "ends" else (0,)
            folder = make_synthetic_clip(work / "ws", "bench", args.frames, (height, width), keyframes=keyframes,
                                         seed=2).folder  # fmt: skip
        options = PropagationOptions(mem_every=args.mem_every, **PATHS[names[0]])
        profile(build_model(args, options, device), scan_clip(folder), options, device, work, names[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory_mode(args: argparse.Namespace, device: torch.device, height: int, width: int) -> None:
    steps = [int(t) for t in args.steps.split(",")]
    paths = args.paths.split(",") if args.paths else ["naive", "default"]
    torch.manual_seed(0)
    frame = torch.randn(1, 3, height, width, device=device)
    probs = torch.softmax(torch.randn(1, 3, height, width, device=device), dim=1)
    rows = []
    for name in paths:
        options = PropagationOptions(**PATHS[name])
        model = build_model(args, options, device)
        autocast = autocast_for(options.precision, device)
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
    args = parse_args()
    if args.mode == "memory":
        ensure_malloc_settings()  # exact peaks; it slows allocation, so clip mode's timings go without it
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)  # the table is the output; keep per-run logs quiet
    height, width = (int(x) for x in args.size.lower().split("x"))
    device = resolve_device(args.device)
    prepare_device(device, load_config(None).SYSTEM)  # cuDNN autotuning as a run has it (the default config's)
    if args.mode == "clip":
        clip_mode(args, device, height, width)
    elif args.mode == "profile":
        profile_mode(args, device, height, width)
    else:
        memory_mode(args, device, height, width)


if __name__ == "__main__":
    main()
