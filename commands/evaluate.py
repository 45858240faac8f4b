"""``tgm.py evaluate``: score predicted trimaps or alpha mattes against the ground truth.

usage: tgm.py evaluate --pred DIR --gt GT_DIR [--gt_kind auto|trimap|alpha] [--band_diameter 10]
                   [--skip_keyframes CLIP_DIR] [--frames_dir CLIP_DIR] [--json scores.json]

Trimaps (--pred holds <stem>_trimap.png, e.g. results/clip_mem5/ensemble): per-class IoU, mIoU,
pixel accuracy, recall of the true unknown band and temporal flicker. Alpha mattes (--pred holds
<stem>_alpha.png, e.g. results/clip_mem5/matte, against <stem>_alpha.png ground truth): SAD, mSAD,
MSE, SSDA, gradient error, dtSSD and MESSDdt (with --frames_dir for the optical flow), inside the
true unknown band (--band_diameter) and overall, scaled as TCVOM's table does (the scaling is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dataset.clip import ALPHA_SUFFIX, TRIMAP_SUFFIX, stems_with
from evaluation.alpha import format_alpha_table
from evaluation.folders import evaluate_alpha_folders, evaluate_folders
from evaluation.metrics import format_table
from utils.cli import add_renamed
from utils.errors import UserError
from utils.io import atomic_write_text

NAME = "evaluate"
HELP = "Score predicted trimaps or alpha mattes against the ground truth."
log = logging.getLogger("evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of predicted <stem>_trimap.png or <stem>_alpha.png")
    parser.add_argument("--gt", required=True, help="folder of true <stem>_trimap.png or <stem>_alpha.png")
    parser.add_argument("--gt_kind", choices=("auto", "trimap", "alpha"), default="auto", help="trimap scoring only")
    parser.add_argument(
        "--band_diameter",
        type=int,
        default=10,
        help="alpha -> trimap: the 0<alpha<1 band widened by a kernel this many px across",
    )
    add_renamed(parser, "--width", "--band_diameter", "band_diameter", type=int)
    parser.add_argument("--skip_keyframes", default=None, help="clip folder whose keyframes are left out")
    parser.add_argument("--frames_dir", default=None, help="alpha scoring: the clip folder, for MESSDdt's optical flow")
    add_renamed(parser, "--frames", "--frames_dir", "frames_dir")
    parser.add_argument("--json", default=None, help="write the scores (with per-frame values) here")


def run(args: argparse.Namespace) -> None:
    if args.band_diameter < 0:
        raise UserError(f"--band_diameter {args.band_diameter}: must be >= 0")
    skip = set()
    if args.skip_keyframes:
        clip_dir = Path(args.skip_keyframes)
        if not clip_dir.is_dir():
            raise UserError(f"--skip_keyframes {clip_dir} is not a folder")
        skip = set(stems_with(clip_dir, TRIMAP_SUFFIX))
    pred = Path(args.pred)
    name = pred.parent.name or "prediction"
    if stems_with(pred, ALPHA_SUFFIX) and not stems_with(pred, TRIMAP_SUFFIX):
        frames = Path(args.frames_dir) if args.frames_dir else None
        scores = evaluate_alpha_folders(pred, Path(args.gt), args.band_diameter, skip, frames)
        print(format_alpha_table({name: scores}))
        if frames is None:
            log.info("no --frames_dir: MESSDdt (which follows the optical flow of the frames) is left out")
    else:
        scores = evaluate_folders(pred, Path(args.gt), args.gt_kind, args.band_diameter, skip)
        print(format_table({name: scores}))
    log.info("%d frames scored%s", scores.frames, f" ({len(skip)} keyframes skipped)" if skip else "")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(scores.as_dict(), indent=2))
        log.info("scores written to %s", args.json)
