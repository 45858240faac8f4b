"""``tgm.py overlay``: the fused trimaps over their frames as a video (background darkened, unknown orange).

usage: tgm.py overlay --result RESULTS/CLIP_memN --dataroot WORKSPACE [--out overlay.mp4] [--fps 25]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX
from evaluation.folders import read_labels
from evaluation.pictures import trimap_overlay, write_video
from inference.layout import ResultFolder
from utils.errors import UserError
from utils.images import read_image

NAME = "overlay"
HELP = "The fused trimaps over their frames, as a video."
log = logging.getLogger("overlay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--result", required=True, help="a result folder <clip>_mem<N> with ensemble/")
    parser.add_argument("--dataroot", required=True, help="the workspace holding <clip>/<stem>_rgb.png")
    parser.add_argument("--out", default=None, help="video path (.mp4 or .avi); default <result>/overlay.mp4")
    parser.add_argument("--fps", type=float, default=25.0)


def run(args: argparse.Namespace) -> None:
    result = ResultFolder(args.result)
    stems = result.ensemble_stems()
    if not stems:
        raise UserError(
            f"{result.ensemble_dir} holds no <stem>{TRIMAP_SUFFIX}; "
            f"run ensemble.py --predroot {result.path.parent} first"
        )
    frames_dir = Path(args.dataroot) / result.clip_name
    missing = [s for s in stems if not (frames_dir / f"{s}{FRAME_SUFFIX}").exists()]
    if missing:
        raise UserError(f"{frames_dir / (missing[0] + FRAME_SUFFIX)} is missing; check --dataroot")
    out = Path(args.out) if args.out else result.path / "overlay.mp4"
    images = (
        trimap_overlay(
            read_image(frames_dir / f"{s}{FRAME_SUFFIX}", cv2.IMREAD_COLOR), read_labels(result.ensemble_png(s))
        )
        for s in stems
    )
    count = write_video(out, images, args.fps, total=len(stems))
    log.info("%d frames -> %s", count, out)
