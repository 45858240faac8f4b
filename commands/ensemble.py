"""``tgm.py ensemble`` = ``ensemble.py``: fuse the parts written by propagation into one trimap per frame.

For every result folder under --predroot (or those named: a folder name such as clip_mem5, or a
clip name standing for all its clip_mem* folders) writes ensemble/<stem>_trimap.png (0/128/255)
and envis/<stem>.png (half frame, half trimap; needs --dataroot/<clip>/<stem>_rgb.png), and
uncertainty.json / uncertainty.png: how much each frame's forward and backward predictions
disagree, and the frames worth a keyframe trimap next (printed).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inference.ensemble import ensemble_folders
from inference.layout import select_results
from utils.errors import UserError

NAME = "ensemble"
HELP = "Fuse the parts written by test_mf_2.py into one trimap per frame."
log = logging.getLogger("ensemble")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predroot", required=True, help="the --save folder of test_mf_2.py")
    parser.add_argument("--dataroot", default=None, help="the workspace holding <clip>/<stem>_rgb.png (for envis/)")
    parser.add_argument("results", nargs="*", help="result folders (clip_memN) or clip names; default: all")


def run(args: argparse.Namespace) -> None:
    dataroot = Path(args.dataroot) if args.dataroot else None
    if dataroot is not None and not dataroot.is_dir():
        raise UserError(f"--dataroot {dataroot} is not a folder; pass the workspace that holds the clip folders")
    results = select_results(Path(args.predroot), args.results)
    if dataroot is None:
        log.info("no --dataroot: writing ensemble/ only, no envis/ overlays")
    for name, uncertainty in ensemble_folders(results, dataroot).items():
        ranked = [f"{stem} ({uncertainty.frames[stem]:.3f})" for stem in uncertainty.suggested]
        print(f"{name}: annotate next: {', '.join(ranked) if ranked else 'nothing (every frame is a keyframe)'}")
