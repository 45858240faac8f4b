#!/usr/bin/env python3
"""The GPU check's inputs, made once before its steps are timed: a generated clip with keyframes at
both ends (frames and the two keyframe trimaps only, PNGs encoded on every core), its config and
the parity weights, in one folder that the benches take with ``--inputs`` or ``--clip``.

usage:
  python -m bench.gpu_inputs --out DIR [--size 1088x1920] [--frames 40]

DIR/clip/<stem>_rgb.png, DIR/clip/<stem>_trimap.png (first and last frame), DIR/clip.yaml, DIR/parity.pth.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import torch

from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX
from dataset.synthetic import render_frames
from dataset.trimap import alpha_to_trimap
from model.stm import STM
from model.weights import parity_state_dict
from utils.io import atomic_write_png


def make_inputs(out: Path, frames: int, size: tuple[int, int], seed: int = 6) -> Path:
    """Write the clip, its config and the weights under ``out``; returns the config's path."""
    height, width = size
    folder = out / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    cores = max(1, len(os.sched_getaffinity(0)))
    images, alphas = render_frames(frames, height, width, seed, workers=cores)
    keyframes = (0, frames - 1)
    with ThreadPoolExecutor(cores) as pool:  # OpenCV encodes without the GIL
        jobs = [
            pool.submit(atomic_write_png, folder / f"{t:05d}{FRAME_SUFFIX}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            for t, image in enumerate(images)
        ]
        jobs += [
            pool.submit(atomic_write_png, folder / f"{t:05d}{TRIMAP_SUFFIX}", alpha_to_trimap(alphas[t], 7))
            for t in keyframes
        ]
        for job in jobs:
            job.result()
    torch.save(parity_state_dict(STM()), out / "parity.pth")
    cfg = out / "clip.yaml"
    cfg.write_text(f"DATASET:\n  PATH: '{folder.resolve()}'\n")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="1088x1920", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    start = time.perf_counter()
    make_inputs(Path(args.out), args.frames, (height, width))
    print(f"inputs: {args.frames} frames of {width}x{height}, keyframes at both ends, the parity weights, "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
