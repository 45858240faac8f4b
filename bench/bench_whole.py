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
``default`` variant (fp32), which runs first. Variants:

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1088x1920", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timeout", type=int, default=240, help="seconds one process may take")
    parser.add_argument("--json", default=None, help="append one JSON line per variant here")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    variants = [v for v in args.variants.split(",") if v]
    if "default" in variants:
        variants.remove("default")
    variants.insert(0, "default")  # the reference runs first
    if not args.device.startswith("cuda"):
        variants = [v for v in variants if v not in CUDA_ONLY]
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"# whole processes: test_mf_2.py, {args.frames} frames of {width}x{height}, keyframes at both ends, "
          f"--mem_every 5, {args.device} ({where}), torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-whole-") as tmp:
        root = Path(tmp)
        sample = make_synthetic_clip(root / "ws", "hd", num_frames=args.frames, size=(height, width),
                                     keyframes=(0, args.frames - 1), seed=6)  # fmt: skip
        weights = root / "parity.pth"
        torch.save(parity_state_dict(STM()), weights)
        cfg = root / "clip.yaml"
        cfg.write_text(f"DATASET:\n  PATH: '{sample.folder}'\n")
        print("| variant | process s | propagation s | first visit s | start-up and compile s | peak GPU GiB | "
              "labels vs default | max diff /255 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        reference = None
        for variant in variants:
            save = root / variant
            start = time.perf_counter()
            try:
                run = subprocess.run(command(variant, cfg, weights, save, args.device), cwd=REPO, capture_output=True,
                                     text=True, timeout=args.timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                print(f"| {variant} | > {args.timeout} (stopped) | | | | | | |", flush=True)
                continue
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                print(f"| {variant} | failed (exit {run.returncode}): {run.stderr.strip().splitlines()[-1][:120]} |")
                continue
            log = run.stderr + run.stdout
            found = re.search(r"(\d+) frames in ([\d.]+) s", log)
            propagation = float(found.group(2)) if found else float("nan")
            first = re.search(r"first visit ([\d.]+) s", log)
            peak = re.search(r"at most (\d+) MiB reserved", log)
            pngs = part_pngs(save)
            if reference is None:
                reference, agree, diff = pngs, 1.0, 0
            else:
                agree, diff = agreement(pngs, reference)
            row = {
                "variant": variant, "process_s": round(seconds, 2), "propagation_s": propagation,
                "first_visit_s": float(first.group(1)) if first else None,
                "startup_s": round(seconds - propagation, 2), "peak_gib": int(peak.group(1)) / 1024 if peak else None,
                "labels_vs_default": agree, "max_diff_255": diff,
            }  # fmt: skip
            first_s = "-" if row["first_visit_s"] is None else f"{row['first_visit_s']:.1f}"
            peak_s = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
            print(f"| {variant} | {seconds:.1f} | {propagation:.1f} | {first_s} | {row['startup_s']:.1f} | {peak_s} | "
                  f"{agree:.4%} | {diff} |", flush=True)  # fmt: skip
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
