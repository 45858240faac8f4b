#!/usr/bin/env python3
"""Whole processes, as a user runs them: ``test_mf_2.py`` on a generated clip, one process per
variant, timed from start to exit (imports, weights, cuDNN autotuning and compiling included).

usage:
  python -m bench.bench_whole [--size 1088x1920] [--frames 20] [--variants default,fast,...] [--device cuda:0]

The clip (keyframes at both ends: 2 * (frames - 2) segment visits) and the weights (the parity
weights, made by our own code) are generated once. Per variant: the process's wall seconds; the
propagation's own seconds (its log line "N frames in S s"), the first segment visit's seconds
(the progress log), and the rest, start-up and compiling; the peak GPU memory the run logs; the
label agreement and largest probability difference (in 255ths) of its part PNGs against the
``default`` variant (fp32), which runs first; where that row fails, no row states an agreement.
Each row is printed and appended to --json as it finishes, so a run stopped part-way keeps its
finished rows; a failed or stopped row makes the exit status non-zero. Variants:

  default            the published operations (fp32)
  fast               --fast (fp32)
  bf16, fp16, tf32   --fast --precision ...
  compile            --fast --compile (fp32)
  bf16-no-autotune   --fast --precision bf16 with SYSTEM.CUDNN_BENCHMARK False (the first frames' cost)
  bf16-24gb          --fast --precision bf16 capped at 24 GB (torch.cuda.set_per_process_memory_fraction)
  bf16-batch1        --fast --precision bf16 --query_batch 1 (the batched query frames' agreement)

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dataset.synthetic import make_synthetic_clip
from model.stm import STM
from model.weights import parity_state_dict

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": [],
    "fast": ["--fast"],
    "bf16": ["--fast", "--precision", "bf16"],
    "fp16": ["--fast", "--precision", "fp16"],
    "tf32": ["--fast", "--precision", "tf32"],
    "compile": ["--fast", "--compile"],
    "bf16-no-autotune": ["--fast", "--precision", "bf16"],
    "bf16-24gb": ["--fast", "--precision", "bf16"],
    "bf16-batch1": ["--fast", "--precision", "bf16", "--query_batch", "1"],
}
CUDA_ONLY = {"tf32", "bf16-24gb"}


def command(variant: str, cfg: Path, weights: Path, save: Path, device: str) -> list[str]:
    argv = ["--cfg", str(cfg), "--load", str(weights), "--save", str(save), "--mem_every", "5", "--device", device,
            *VARIANTS[variant]]  # fmt: skip
    if variant == "bf16-no-autotune":
        argv += ["SYSTEM.CUDNN_BENCHMARK", "False"]
    if variant == "bf16-24gb":  # the cap set before the script runs, in the same process
        script = (
            "import torch, sys; total = torch.cuda.get_device_properties(0).total_memory; "
            "torch.cuda.set_per_process_memory_fraction(min(1.0, 24e9 / total), 0); "
            f"sys.argv = ['test_mf_2.py', *{argv!r}]; import runpy; runpy.run_path('test_mf_2.py', run_name='__main__')"
        )
        return [sys.executable, "-c", script]
    return [sys.executable, "test_mf_2.py", *argv]


def part_pngs(save: Path) -> dict[str, np.ndarray]:
    """Every part PNG of the result folders under ``save``, by relative path."""
    paths = sorted(save.glob("*/part*/*.png"))
    return {p.relative_to(save).as_posix(): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths}


def agreement(other: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[float, int]:
    """(the share of labels that agree, the largest difference in 255ths) of two runs' part PNGs."""
    agree = float(np.mean([(other[k].argmax(2) == reference[k].argmax(2)).mean() for k in reference]))
    return agree, int(max(np.abs(other[k].astype(int) - reference[k]).max() for k in reference))


def run_variant(variant: str, cfg: Path, weights: Path, save: Path, device: str, timeout: int) -> dict:
    """One whole process of ``variant``: its row (``status`` "ok", "failed" or "stopped")."""
    start = time.perf_counter()
    try:
        run = subprocess.run(command(variant, cfg, weights, save, device), cwd=REPO, capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"variant": variant, "status": "stopped", "process_s": None, "why": f"over {timeout} s"}
    seconds = time.perf_counter() - start
    log = run.stderr + run.stdout
    if run.returncode != 0:
        last = (run.stderr.strip() or run.stdout.strip() or "(no output)").splitlines()[-1][:200]
        return {"variant": variant, "status": "failed", "process_s": round(seconds, 2),
                "why": f"exit {run.returncode}: {last}"}  # fmt: skip
    found = re.search(r"(\d+) frames in ([\d.]+) s", log)
    propagation = float(found.group(2)) if found else float("nan")
    first = re.search(r"first visit ([\d.]+) s", log)
    peak = re.search(r"at most (\d+) MiB reserved", log)
    return {
        "variant": variant, "status": "ok", "process_s": round(seconds, 2), "propagation_s": propagation,
        "first_visit_s": float(first.group(1)) if first else None,
        "startup_s": round(seconds - propagation, 2), "peak_gib": int(peak.group(1)) / 1024 if peak else None,
    }  # fmt: skip


def table_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"| {row['variant']} | {row['status']}: {row['why']} | | | | | | |"
    first = "-" if row["first_visit_s"] is None else f"{row['first_visit_s']:.1f}"
    peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
    agree = "-" if row["labels_vs_default"] is None else f"{row['labels_vs_default']:.4%}"
    diff = "-" if row["max_diff_255"] is None else str(row["max_diff_255"])
    return (f"| {row['variant']} | {row['process_s']:.1f} | {row['propagation_s']:.1f} | {first} | "
            f"{row['startup_s']:.1f} | {peak} | {agree} | {diff} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1088x1920", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timeout", type=int, default=240, help="seconds one process may take")
    parser.add_argument("--json", default=None, help="append one JSON line per variant here, as each finishes")
    parser.add_argument("--reference", default=None, help="a folder for the default row's part PNGs; where "
                        "it holds an earlier run's, that row is not run again: rows compare with those")  # fmt: skip
    parser.add_argument("--inputs", default=None, help="a folder of bench.gpu_inputs (clip.yaml, parity.pth): "
                        "use it instead of generating the clip (--size and --frames are then its own)")  # fmt: skip
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if "default" in variants:
        variants.remove("default")
    variants.insert(0, "default")  # the reference runs first
    if not args.device.startswith("cuda"):
        variants = [v for v in variants if v not in CUDA_ONLY]
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    with tempfile.TemporaryDirectory(prefix="bench-whole-") as tmp:
        root = Path(tmp)
        if args.inputs:
            cfg, weights = Path(args.inputs) / "clip.yaml", Path(args.inputs) / "parity.pth"
            frames, size = clip_shape(cfg)
        else:
            height, width = map(int, args.size.split("x"))
            cfg, weights = make_inputs(root, args.frames, (height, width))
            frames, size = args.frames, (height, width)
        print(f"# whole processes: test_mf_2.py, {frames} frames of {size[1]}x{size[0]}, keyframes at both ends, "
              f"--mem_every 5, {args.device} ({where}), torch {torch.__version__}", flush=True)  # fmt: skip
        print("| variant | process s | propagation s | first visit s | start-up and compile s | peak GPU GiB | "
              "labels vs default | max diff /255 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|", flush=True)
        reference = None
        kept = Path(args.reference) if args.reference else None
        if kept is not None and any(kept.glob("*/part*/*.png")):
            reference = part_pngs(kept)
            variants.remove("default")
            print(f"| default | (the rows compare with the default row of an earlier run: {kept}) | | | | | | |")
        failed = []
        try:
            for variant in variants:
                save = root / variant
                row = run_variant(variant, cfg, weights, save, args.device, args.timeout)
                row["labels_vs_default"] = row["max_diff_255"] = None
                if row["status"] == "ok":
                    pngs = part_pngs(save)
                    if variant == "default":
                        reference = pngs
                    if reference is not None:  # no reference, no agreement: never another row in its place
                        row["labels_vs_default"], row["max_diff_255"] = agreement(pngs, reference)
                    if variant == "default" and kept is not None:
                        shutil.copytree(save, kept, dirs_exist_ok=True)
                    shutil.rmtree(save, ignore_errors=True)
                else:
                    failed.append(variant)
                print(table_row(row), flush=True)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps(row) + "\n")
        except KeyboardInterrupt:
            print(f"stopped (interrupted) after the rows above; not run: {variants[variants.index(variant):]}",
                  flush=True)  # fmt: skip
            sys.exit(130)
        if reference is None:
            print("the fp32 default row failed: no row states its agreement with fp32", flush=True)
        if failed:
            sys.exit(f"{len(failed)} row(s) failed: {', '.join(failed)}")


def make_inputs(root: Path, frames: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """A generated clip (keyframes at both ends), its config and the parity weights under ``root``."""
    sample = make_synthetic_clip(root / "ws", "hd", num_frames=frames, size=size, keyframes=(0, frames - 1), seed=6)
    weights = root / "parity.pth"
    torch.save(parity_state_dict(STM()), weights)
    cfg = root / "clip.yaml"
    cfg.write_text(f"DATASET:\n  PATH: '{sample.folder}'\n")
    return cfg, weights


def clip_shape(cfg: Path) -> tuple[int, tuple[int, int]]:
    """(frames, (height, width)) of the clip a prepared config points to."""
    folder = Path(re.search(r"PATH: '(.*)'", cfg.read_text()).group(1))
    frames = sorted(folder.glob("*_rgb.png"))
    height, width = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED).shape[:2]
    return len(frames), (height, width)


if __name__ == "__main__":
    main()
