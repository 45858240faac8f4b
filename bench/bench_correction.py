#!/usr/bin/env python3
"""How well the disagreement score finds the frames where propagation went wrong, what the
suggested keyframe buys, and what an incremental rerun costs.

usage: python -m bench.bench_correction [--clips 3] [--frames 25] [--size 128x224] [--steps 80]

For each generated clip (made as the demo makes its clip, with other seeds; ground truth for every
frame; 16 frames with keyframes 0 and 9, so frames 1-8 have two passes and 10-15 one): finetune as
the demo does, propagate, fuse, and compare each frame's
score with its true error (1 - mIoU against the ground truth): Spearman's rank correlation over
two-pass frames, one-pass frames and all. Then add one keyframe trimap (from the ground truth)
with the same checkpoint, once at the top suggested frame and once at the middle frame between
the keyframes, and score all frames but the original keyframes. Last, on a 40-frame clip with 5
keyframes, time a full run against the incremental rerun after one keyframe was redrawn and
after one was added (medians of --runs). Run it alone on the machine (about 12 minutes here).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from config import load_config
from dataset.clip import TRIMAP_SUFFIX, scan_clip
from dataset.synthetic import make_synthetic_clip
from evaluation.folders import evaluate_folders
from inference.options import PropagationOptions
from inference.uncertainty import read_uncertainty
from model.checkpoint import save_checkpoint
from model.stm import STM
from model.weights import trainable_random_init
from pipeline.clip import Finetuning, run_clip
from utils.device import prepare_device
from utils.io import atomic_write_png
from utils.logs import setup_logging

CPU = torch.device("cpu")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (keyframes as in the demo)")
    parser.add_argument("--size", default="128x224", help="HEIGHTxWIDTH")
    parser.add_argument("--steps", type=int, default=80, help="finetuning steps (the demo's)")
    parser.add_argument("--runs", type=int, default=3, help="timing: runs per measurement (median)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--work", default=None, help="keep clips and results in this folder (default: temporary)")
    parser.add_argument("--skip_timing", action="store_true", help="leave out the timing of reruns")
    parser.add_argument("--load", default=None, help="timing with --clips 0: the checkpoint to propagate with")
    return parser.parse_args()


def ranks(values: list[float]) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's correlation)."""
    values = np.asarray(values, float)
    order = values.argsort(kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(len(values))
    for value in np.unique(values):
        same = values == value
        ranked[same] = ranked[same].mean()
    return ranked


def spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def demo_config(clip_dir: Path, outdir: Path, start: Path, size: tuple[int, int], steps: int):
    """The demo's finetuning recipe (see demo.py)."""
    height, width = size
    return load_config(None, [
        "DATASET.PATH", str(clip_dir), "SYSTEM.NUM_WORKERS", "0", "SYSTEM.RANDOM_SEED", "1",
        "SYSTEM.OUTDIR", str(outdir), "FINETUNE.SAVE_FREQ", "-1", "TRAIN.LOAD_CKPT", str(start),
        "TRAIN.BASE_LR", "1e-4", "TRAIN.LR_STRATEGY", "poly", "TRAIN.UNKNOWN_WEIGHT", "1.0",
        "TRAIN.TRAIN_INPUT_SIZE", f"({width}, {height})", "TRAIN.TOTAL_STEPS", str(steps), "TRAIN.IMAGE_FREQ", "0",
    ])  # fmt: skip


def mean_miou(result_dir: Path, gt: Path, skip: set[str]) -> float:
    return evaluate_folders(result_dir / "ensemble", gt, "trimap", skip=skip).miou


def measure_clip(work: Path, index: int, args, size, options) -> dict:
    """Clip ``index`` is generated as the demo generates its clip with ``--seed index + 1`` (clip 0
    is the demo's), with the demo's keyframes and random start."""
    name = f"clip{index}"
    keyframes = (0, round(0.6 * (args.frames - 1)))
    middle = keyframes[1] // 2
    sample = make_synthetic_clip(work / "ws", name, args.frames, size, keyframes, seed=index + 1, unknown_width=9,
                                 gt_root=work / "gt")  # fmt: skip
    torch.manual_seed(1)
    start = STM()
    trainable_random_init(start)
    save_checkpoint(start, work / f"start{index}.pth")
    cfg = demo_config(sample.folder, work / "train_log", work / f"start{index}.pth", size, args.steps)
    clip = scan_clip(sample.folder)
    results = work / f"results_{name}"
    finished = work / "train_log" / name / f"checkpoint_{args.steps}.pth.tar"
    if finished.exists():  # a kept --work folder: the (seeded, repeatable) finetuning is done
        run = run_clip(clip, results, options, CPU, checkpoint=finished)
    else:
        run = run_clip(clip, results, options, CPU, finetuning=Finetuning(cfg, work / f"{name}.yaml"))
    uncertainty = read_uncertainty(run.result)
    keyframe_stems = {sample.stems[k] for k in keyframes}
    truth = evaluate_folders(run.result.ensemble_dir, sample.gt_folder, "trimap", skip=keyframe_stems).per_frame_miou
    scored = [s for s in sample.stems if s in uncertainty["frames"]]
    two_pass = [s for s in scored if int(s) < keyframes[1]]
    one_pass = [s for s in scored if int(s) > keyframes[1]]

    def correlation(stems: list[str]) -> float:
        return spearman([uncertainty["frames"][s] for s in stems], [1 - truth[s] for s in stems])

    record = {
        "clip": name, "checkpoint": str(run.checkpoint),
        "spearman_two_pass": correlation(two_pass), "spearman_one_pass": correlation(one_pass),
        "spearman_all": correlation(scored), "suggested": uncertainty["suggested"],
        "miou_before": mean_miou(run.result.path, sample.gt_folder, keyframe_stems),
    }  # fmt: skip
    for label, stem in (("top_suggested", uncertainty["suggested"][0]), ("middle", sample.stems[middle])):
        ws = work / f"ws_{name}_{label}"
        shutil.copytree(sample.folder, ws / name)
        shutil.copy(sample.gt_folder / f"{stem}{TRIMAP_SUFFIX}", ws / name / f"{stem}{TRIMAP_SUFFIX}")
        save = work / f"results_{name}_{label}"
        shutil.copytree(results, save)  # the rerun starts from the first run's result: incremental
        corrected = run_clip(scan_clip(ws / name), save, options, CPU, checkpoint=run.checkpoint)
        record[f"{label}_frame"] = stem
        record[f"miou_{label}"] = mean_miou(corrected.result.path, sample.gt_folder, keyframe_stems)
        record[f"parts_{label}"] = f"{len(corrected.computed)} computed, {len(corrected.reused)} reused"
    return record


def measure_timing(work: Path, checkpoint: Path, size, options, runs: int) -> dict:
    sample = make_synthetic_clip(work / "tws", "long", 40, size, (0, 10, 20, 30, 39), seed=7, unknown_width=9,
                                 gt_root=work / "tgt")  # fmt: skip

    def timed(folder: Path, save: Path, fresh: bool) -> float:
        if fresh and save.exists():
            shutil.rmtree(save)
        began = time.perf_counter()
        run_clip(scan_clip(folder), save, options, CPU, checkpoint=checkpoint)
        return time.perf_counter() - began

    base = work / "tbase"
    timed(sample.folder, base, True)
    full, redrawn, added = [], [], []
    for _ in range(runs):
        full.append(timed(sample.folder, work / "tfull", True))
        for edit, times in (("redraw", redrawn), ("add", added)):
            clip_copy = work / f"t_{edit}" / "long"
            if clip_copy.parent.exists():
                shutil.rmtree(clip_copy.parent)
            shutil.copytree(sample.folder, clip_copy)
            if edit == "redraw":
                trimap = cv2.imread(str(clip_copy / f"00020{TRIMAP_SUFFIX}"), cv2.IMREAD_GRAYSCALE)
                height, width = trimap.shape
                corrected = trimap.copy()
                corrected[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 128  # over the object
                assert (corrected != trimap).any()
                atomic_write_png(clip_copy / f"00020{TRIMAP_SUFFIX}", corrected)
            else:
                shutil.copy(work / "tgt" / "long" / f"00025{TRIMAP_SUFFIX}", clip_copy / f"00025{TRIMAP_SUFFIX}")
            save = work / f"tsave_{edit}"
            if save.exists():
                shutil.rmtree(save)
            shutil.copytree(base, save)
            times.append(timed(clip_copy, save, False))
    return {
        "full_s": statistics.median(full), "redraw_keyframe_20_s": statistics.median(redrawn),
        "add_keyframe_25_s": statistics.median(added),
    }  # fmt: skip


def main() -> None:
    args = parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    prepare_device(CPU)
    size = tuple(int(x) for x in args.size.lower().split("x"))
    options = PropagationOptions()
    with tempfile.TemporaryDirectory(prefix="bench_correction_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        records = []
        for index in range(args.clips):
            records.append(measure_clip(work, index, args, size, options))
            print(json.dumps(records[-1]), flush=True)
        timing = {"full_s": float("nan"), "redraw_keyframe_20_s": float("nan"), "add_keyframe_25_s": float("nan")}
        if not args.skip_timing:
            checkpoint = Path(records[0]["checkpoint"]) if records else Path(args.load)
            timing = measure_timing(work, checkpoint, size, options, args.runs)
    if not records:
        print(json.dumps({"timing": timing}))
        return
    print(f"\n{'clip':<7}{'rho 2-pass':>11}{'rho 1-pass':>11}{'rho all':>9}{'mIoU':>7}"
          f"{'+top (frame)':>16}{'+middle (frame)':>18}")  # fmt: skip
    for r in records:
        print(
            f"{r['clip']:<7}{r['spearman_two_pass']:>11.2f}{r['spearman_one_pass']:>11.2f}{r['spearman_all']:>9.2f}"
            f"{r['miou_before']:>7.3f}{r['miou_top_suggested']:>9.3f} ({r['top_suggested_frame']})"
            f"{r['miou_middle']:>11.3f} ({r['middle_frame']})"
        )
    mean = {k: float(np.mean([r[k] for r in records])) for k in records[0] if k.startswith(("spearman", "miou"))}
    print(f"{'mean':<7}{mean['spearman_two_pass']:>11.2f}{mean['spearman_one_pass']:>11.2f}{mean['spearman_all']:>9.2f}"
          f"{mean['miou_before']:>7.3f}{mean['miou_top_suggested']:>9.3f}{mean['miou_middle']:>18.3f}")  # fmt: skip
    print(f"\n40 frames, keyframes 0/10/20/30/39, {size[0]}x{size[1]}, medians of {args.runs}: full run "
          f"{timing['full_s']:.1f} s; after redrawing keyframe 20 {timing['redraw_keyframe_20_s']:.1f} s; "
          f"after adding keyframe 25 {timing['add_keyframe_25_s']:.1f} s")  # fmt: skip
    summary = {"clips": records, "mean": mean, "timing": timing}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
