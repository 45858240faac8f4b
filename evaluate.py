#!/usr/bin/env python3
"""Score predicted trimaps or alpha mattes against the ground truth.

usage: evaluate.py --pred DIR --gt GT_DIR [--gt_kind auto|trimap|alpha] [--width 10]
                   [--skip_keyframes CLIP_DIR] [--frames CLIP_DIR] [--json scores.json]

Trimaps (--pred holds <stem>_trimap.png, e.g. results/clip_mem5/ensemble): per-class IoU, mIoU,
pixel accuracy, recall of the true unknown band and temporal flicker. Alpha mattes (--pred holds
<stem>_alpha.png, e.g. results/clip_mem5/matte, against <stem>_alpha.png ground truth): SAD, mSAD,
MSE, SSDA, gradient error, dtSSD and MESSDdt (with --frames for the optical flow), inside the
true unknown band (--width) and overall, scaled as TCVOM's table does (the scaling is printed).
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
from utils.errors import UserError, run_cli
from utils.io import atomic_write_text
from utils.logs import setup_logging

log = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, help="folder of predicted <stem>_trimap.png or <stem>_alpha.png")
    parser.add_argument("--gt", required=True, help="folder of true <stem>_trimap.png or <stem>_alpha.png")
    parser.add_argument("--gt_kind", choices=("auto", "trimap", "alpha"), default="auto", help="trimap scoring only")
    parser.add_argument("--width", type=int, default=10, help="alpha -> trimap: dilation of the 0<alpha<1 band")
    parser.add_argument("--skip_keyframes", default=None, help="clip folder whose keyframes are left out")
    parser.add_argument("--frames", default=None, help="alpha scoring: the clip folder, for MESSDdt's optical flow")
    parser.add_argument("--json", default=None, help="write the scores (with per-frame values) here")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    if args.width < 0:
        raise UserError(f"--width {args.width}: must be >= 0")
    skip = set()
    if args.skip_keyframes:
        clip_dir = Path(args.skip_keyframes)
        if not clip_dir.is_dir():
            raise UserError(f"--skip_keyframes {clip_dir} is not a folder")
        skip = set(stems_with(clip_dir, TRIMAP_SUFFIX))
    pred = Path(args.pred)
    name = pred.parent.name or "prediction"
    if stems_with(pred, ALPHA_SUFFIX) and not stems_with(pred, TRIMAP_SUFFIX):
        frames = Path(args.frames) if args.frames else None
        scores = evaluate_alpha_folders(pred, Path(args.gt), args.width, skip, frames)
        print(format_alpha_table({name: scores}))
        if frames is None:
            log.info("no --frames: MESSDdt (which follows the optical flow of the frames) is left out")
    else:
        scores = evaluate_folders(pred, Path(args.gt), args.gt_kind, args.width, skip)
        print(format_table({name: scores}))
    log.info("%d frames scored%s", scores.frames, f" ({len(skip)} keyframes skipped)" if skip else "")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(scores.as_dict(), indent=2))
        log.info("scores written to %s", args.json)


if __name__ == "__main__":
    run_cli(main)
