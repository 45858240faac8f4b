"""``tgm.py overlay``: the fused trimaps over their frames as a video (background darkened, unknown orange).

usage: tgm.py overlay --result RESULTS/CLIP_memN --dataroot WORKSPACE [--out overlay.mp4] [--fps 25]

The clip may be a folder or a video (``WORKSPACE/CLIP.mp4``); a video's frame rate is kept unless
--fps says otherwise, and each frame keeps its number (its time in the source).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from dataset.clip import TRIMAP_SUFFIX, locate_clip, open_clip_frames
from dataset.video import DEFAULT_FPS, WRITERS, frame_numbers
from evaluation.folders import read_labels
from evaluation.pictures import trimap_overlay, write_video
from inference.layout import ResultFolder
from utils.errors import UserError

NAME = "overlay"
HELP = "The fused trimaps over their frames, as a video."
log = logging.getLogger("overlay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--result", required=True, help="a result folder <clip>_mem<N> with ensemble/")
    parser.add_argument(
        "--dataroot", required=True, help="the workspace holding <clip>/<stem>_rgb.png or the video <clip>.mp4"
    )
    parser.add_argument("--out", default=None, help=f"video path ({', '.join(WRITERS)}); default <result>/overlay.mp4")
    parser.add_argument("--fps", type=float, default=None, help="default: the clip video's, else 25")


def run(args: argparse.Namespace) -> None:
    result = ResultFolder(args.result)
    stems = result.ensemble_stems()
    if not stems:
        raise UserError(
            f"{result.ensemble_dir} holds no <stem>{TRIMAP_SUFFIX}; "
            f"run ensemble.py --predroot {result.path.parent} first"
        )
    where = locate_clip(Path(args.dataroot), result.clip_name)
    if not where.exists():
        raise UserError(f"{where} is missing (nor is there a video {where}.mp4); check --dataroot")
    frames = open_clip_frames(where)
    missing = [s for s in stems if s not in set(frames.stems)]
    if missing:
        what = f"{where} has no frame {missing[0]}" if frames.is_video else f"{frames.describe(missing[0])} is missing"
        raise UserError(f"{what}; check --dataroot")
    fps = args.fps or (float(frames.source.info.fps) if frames.is_video else DEFAULT_FPS)
    out = Path(args.out) if args.out else result.path / "overlay.mp4"
    images = (
        trimap_overlay(np.ascontiguousarray(frames.read_rgb(s)[..., ::-1]), read_labels(result.ensemble_png(s)))
        for s in stems
    )
    try:
        count = write_video(out, images, fps, total=len(stems), frame_numbers=frame_numbers(stems))
    finally:
        frames.close()
    log.info("%d frames at %.3g fps -> %s", count, fps, out)
