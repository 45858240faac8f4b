#!/usr/bin/env python3
"""Long clips and HD clips: memory and disk against the clip's length, and what an internal size buys.

usage:
  python -m bench.bench_long_clip length [--lengths 100,500,2000] [--size 64x112]
  python -m bench.bench_long_clip hd [--sizes 720x1280,1088x1920] [--internal 480,720,0] [--frames 6] [--load CKPT]

length mode: for each length N a generated video (H.264 .mp4) with a keyframe every
--keyframe_every frames and at its last frame is propagated by ``test_mf_2.py`` in a child
process, as a user would run a long clip: ``--max_memory 8 --discard_parts``, the video decoded on
the fly. What a run holds grows with a segment (the frames between two keyframes: the forward
pass's PNGs wait on disk for the backward pass, the shared query features in RAM), not with N.
Printed per N: the child's peak resident set (ru_maxrss), the most disk it used beyond its outputs
(part PNGs and the decoded-frame cache folder, sampled every 0.2 s), the outputs it keeps (fused
trimaps, overlays, uncertainty), frames per second of the clip (wall time of the child, start-up
included), and the peak RSS as a ratio to the shortest clip's (flat: close to 1).

hd mode: for each size a generated clip with ground truth (keyframes at both ends) is finetuned
on its two keyframes (--finetune_steps of the demo's recipe, on --crop crops, starting from
--load, e.g. the demo's finetuned checkpoint; 0 steps: --load as it is; no --load: the parity
weights, whose trimaps mean nothing) and then propagated in this process at each internal size
(0: the frames' own size, the published computation). Printed: seconds per frame (both passes),
mIoU and unknown-band recall (share of the true unknown pixels labelled unknown) against the
ground truth, and the label agreement with the full-size result. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.roofline import cpu_info
from dataset.clip import TRIMAP_SUFFIX, scan_clip
from dataset.synthetic import make_synthetic_clip, render_frames
from dataset.trimap import UNKNOWN, alpha_to_trimap
from dataset.video import write_video
from evaluation.folders import read_labels, read_truth
from evaluation.metrics import confusion, iou_from_confusion
from inference.layout import PART_PREFIX, ResultFolder
from inference.options import PropagationOptions
from model.stm import STM
from model.weights import parity_state_dict
from pipeline.clip import run_clip
from utils.io import atomic_write_png
from utils.logs import setup_logging

REPO = Path(__file__).resolve().parent.parent


def folder_bytes(*folders: Path) -> int:
    total = 0
    for folder in folders:
        if folder.exists():
            for root, _, files in os.walk(folder):
                for name in files:
                    try:
                        total += os.path.getsize(os.path.join(root, name))
                    except OSError:  # removed while we looked
                        pass
    return total


class DiskSampler:
    """The most bytes ``folders`` held (globs allowed), sampled on a thread every ``interval`` s."""

    def __init__(self, patterns: list[tuple[Path, str]], interval: float = 0.2) -> None:
        self.patterns, self.interval, self.peak = patterns, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            folders = [p for root, pattern in self.patterns for p in root.glob(pattern)]
            self.peak = max(self.peak, folder_bytes(*folders))
            time.sleep(self.interval)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def long_video(work: Path, frames: int, size: tuple[int, int], keyframe_every: int) -> Path:
    """A generated clip as an H.264 video with keyframe trimaps every ``keyframe_every`` frames and at its last."""
    rgb, alphas = render_frames(frames, *size, seed=4)
    video = work / "clip.mp4"
    write_video(video, rgb, 25)
    trimaps = work / "clip_trimaps"
    trimaps.mkdir()
    digits = max(5, len(str(frames - 1)))
    for index in sorted({*range(0, frames, keyframe_every), frames - 1}):
        atomic_write_png(trimaps / f"{index:0{digits}d}{TRIMAP_SUFFIX}", alpha_to_trimap(alphas[index], 7))
    return video


def run_length(args: argparse.Namespace, weights: Path, work: Path) -> list[dict]:
    height, width = map(int, args.size.split("x"))
    rows = []
    for frames in map(int, args.lengths.split(",")):
        case = work / f"n{frames}"
        case.mkdir()
        video = long_video(case, frames, (height, width), args.keyframe_every)
        cfg = case / "clip.yaml"
        cfg.write_text(f"DATASET:\n  PATH: '{video}'\n")
        save, tmp = case / "out", case / "tmp"
        tmp.mkdir()
        command = [sys.executable, str(REPO / "test_mf_2.py"), "--cfg", str(cfg), "--load", str(weights),
                   "--save", str(save), "--max_memory", "8", "--discard_parts", *args.extra.split()]  # fmt: skip
        env = dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        result = ResultFolder.of(save, "clip", 5)  # test_mf_2.py's default --mem_every
        with DiskSampler([(result.path, f"{PART_PREFIX}*"), (tmp, "tgm-frames-*")]) as disk:
            child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        stderr = child.stderr.read()
        if status != 0:
            raise SystemExit(f"test_mf_2.py failed on {frames} frames:\n{stderr[-3000:]}")
        kept = folder_bytes(result.ensemble_dir, result.envis_dir) + sum(
            p.stat().st_size for p in (result.uncertainty_json, result.uncertainty_png) if p.exists()
        )
        rows.append({
            "frames": frames, "size": args.size, "peak_rss_mib": usage.ru_maxrss / 1024,
            "disk_beyond_outputs_mib": disk.peak / 2**20, "outputs_mib": kept / 2**20,
            "fps": frames / seconds, "seconds": seconds, "parts_left": len(result.part_dirs()),
            "keyframe_every": args.keyframe_every, "extra": args.extra.split(),
        })  # fmt: skip
        shutil.rmtree(case)  # the next case starts with the disk as it was
    return rows


def print_length(rows: list[dict], machine: dict) -> None:
    print(f"\n{machine['cpu']}, {machine['logical_cpus']} CPUs; test_mf_2.py --max_memory 8 --discard_parts "
          f"{' '.join(rows[0]['extra'])} on an H.264 video of {rows[0]['size']}, a keyframe every "
          f"{rows[0]['keyframe_every']} frames and at the last\n")  # fmt: skip
    print(f"{'frames':>7} {'peak RSS MiB':>13} {'vs first':>9} {'disk beyond outputs MiB':>24} "
          f"{'outputs MiB':>12} {'frames/s':>9} {'seconds':>8}")  # fmt: skip
    for row in rows:
        print(f"{row['frames']:>7} {row['peak_rss_mib']:>13.0f} {row['peak_rss_mib'] / rows[0]['peak_rss_mib']:>9.2f} "
              f"{row['disk_beyond_outputs_mib']:>24.1f} {row['outputs_mib']:>12.1f} {row['fps']:>9.2f} "
              f"{row['seconds']:>8.0f}")  # fmt: skip


def run_hd(args: argparse.Namespace, weights: Path, work: Path) -> list[dict]:
    cpu = torch.device("cpu")
    rows = []
    for size in args.sizes.split(","):
        height, width = map(int, size.split("x"))
        sample = make_synthetic_clip(work / size / "ws", "clip", args.frames, (height, width),
                                     keyframes=(0, args.frames - 1), seed=6, unknown_width=args.band)  # fmt: skip
        keyframes = {f"{k:05d}" for k in (0, args.frames - 1)}
        checkpoint = weights
        if args.finetune_steps:
            checkpoint = finetune_on(sample.folder, work / size / "train", weights, args.crop, args.finetune_steps)
        full_labels = None
        for internal in map(int, args.internal.split(",")):
            options = PropagationOptions(max_internal_size=internal, fast=args.fast)
            start = time.perf_counter()
            run = run_clip(
                scan_clip(sample.folder), work / size / f"out{internal}", options, cpu, checkpoint=checkpoint
            )
            seconds = time.perf_counter() - start
            stems = [s for s in sorted(p.name[:5] for p in run.result.ensemble_dir.iterdir()) if s not in keyframes]
            labels = [read_labels(run.result.ensemble_png(s)) for s in stems]
            truths = [read_truth(sample.gt_folder, s, "trimap", args.band) for s in stems]
            counts = sum(confusion(p, t) for p, t in zip(labels, truths))
            recall = sum(int(((p == UNKNOWN) & (t == UNKNOWN)).sum()) for p, t in zip(labels, truths)) / max(
                1, sum(int((t == UNKNOWN).sum()) for t in truths)
            )
            if internal == 0:
                full_labels = labels
            agreement = None
            if full_labels is not None:
                agreement = float(np.mean([(a == b).mean() for a, b in zip(labels, full_labels)]))
            rows.append({
                "size": size, "internal": internal, "seconds_per_frame": seconds / args.frames,
                "miou": float(iou_from_confusion(counts).mean()), "unknown_recall": recall, "agreement_full": agreement,
            })  # fmt: skip
    return rows


def finetune_on(clip_dir: Path, outdir: Path, start: Path, crop: str, steps: int) -> Path:
    """The demo's finetuning recipe on a clip's keyframes, from ``start``; returns the checkpoint."""
    from config import load_config
    from training.loop import finetune

    height, width = map(int, crop.split("x"))
    cfg = load_config(None, [
        "DATASET.PATH", str(clip_dir), "SYSTEM.NUM_WORKERS", "0", "SYSTEM.RANDOM_SEED", "1",
        "SYSTEM.OUTDIR", str(outdir), "FINETUNE.SAVE_FREQ", "-1", "TRAIN.LOAD_CKPT", str(start),
        "TRAIN.BASE_LR", "1e-4", "TRAIN.LR_STRATEGY", "poly", "TRAIN.UNKNOWN_WEIGHT", "1.0",
        "TRAIN.TRAIN_INPUT_SIZE", f"({width}, {height})", "TRAIN.TOTAL_STEPS", str(steps), "TRAIN.IMAGE_FREQ", "0",
    ])  # fmt: skip
    return finetune(cfg, outdir / "hd.yaml", scan_clip(clip_dir), torch.device("cpu")).checkpoint


def print_hd(rows: list[dict], machine: dict, args: argparse.Namespace) -> None:
    path = "--fast" if args.fast else "default path"
    start = args.load or "parity (meaningless trimaps)"
    print(f"\n{machine['cpu']}, {machine['logical_cpus']} CPUs; {args.frames}-frame generated clips, keyframes at "
          f"both ends, {path}; weights: {start}, finetuned {args.finetune_steps} steps on {args.crop} crops of "
          "each clip's keyframes\n")  # fmt: skip
    print(f"{'size':>10} {'internal':>9} {'s/frame':>8} {'mIoU':>6} {'unknown recall':>15} {'agrees with full':>17}")
    for row in rows:
        agreement = "-" if row["agreement_full"] is None else f"{row['agreement_full']:.4f}"
        print(f"{row['size']:>10} {row['internal'] or 'full':>9} {row['seconds_per_frame']:>8.2f} {row['miou']:>6.3f} "
              f"{row['unknown_recall']:>15.3f} {agreement:>17}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("length", "hd"))
    parser.add_argument("--lengths", default="100,500,2000")
    parser.add_argument("--size", default="64x112", help="length mode: HxW of the long clip")
    parser.add_argument("--keyframe_every", type=int, default=100, help="length mode: keyframe spacing")
    parser.add_argument("--extra", default="", help="length mode: more flags for test_mf_2.py, e.g. '--fast'")
    parser.add_argument("--sizes", default="720x1280,1088x1920", help="hd mode: HxW of the clips")
    parser.add_argument("--internal", default="0,720,480", help="hd mode: internal sizes (0: full, run first)")
    parser.add_argument("--frames", type=int, default=6, help="hd mode: frames per clip")
    parser.add_argument("--band", type=int, default=21, help="hd mode: the true trimaps' band diameter")
    parser.add_argument("--fast", action="store_true", help="hd mode: propagate with --fast")
    parser.add_argument("--finetune_steps", type=int, default=40, help="hd mode: finetuning steps per clip (0: none)")
    parser.add_argument("--crop", default="256x256", help="hd mode: finetuning crops, HxW")
    parser.add_argument("--load", default=None, help="hd mode: the checkpoint (e.g. the demo's finetuned one)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_flush_denormal(True)
    machine = cpu_info()
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        work = Path(tmp)
        weights = Path(args.load) if args.load else work / "parity.pth"
        if not args.load:
            torch.save(parity_state_dict(STM()), weights)
        if args.mode == "length":
            rows = run_length(args, weights, work)
            print_length(rows, machine)
        else:
            rows = run_hd(args, weights, work)
            print_hd(rows, machine, args)
    if args.json:
        for row in rows:
            print(json.dumps({**row, "cpu": machine["cpu"]}))


if __name__ == "__main__":
    main()
