"""``tgm.py encode``: a PNG sequence (such as the composites of ``tgm.py matte --background``) as a video.

usage: tgm.py encode --images_dir RESULTS/CLIP_memN/matte --out composite.mp4 [--suffix _comp.png] [--fps 25]

Transparent images (the RGBA foregrounds) go over black; the PNG sequence itself stays the
lossless result.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dataset.clip import stems_with
from evaluation.pictures import over_black, write_video
from matting.sequence import COMPOSITE_SUFFIX
from utils.cli import add_renamed
from utils.errors import UserError
from utils.images import read_image

NAME = "encode"
HELP = "A PNG sequence (e.g. the composites of tgm.py matte) as a video."
log = logging.getLogger("encode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images_dir", default=None, help="folder of <stem><suffix> images, in stem order (required)")
    add_renamed(parser, "--frames", "--images_dir", "images_dir")
    parser.add_argument("--suffix", default=COMPOSITE_SUFFIX, help=f"which images (default {COMPOSITE_SUFFIX})")
    parser.add_argument("--out", required=True, help="video path (.mp4 or .avi)")
    parser.add_argument("--fps", type=float, default=25.0)


def run(args: argparse.Namespace) -> None:
    if args.images_dir is None:
        raise UserError("--images_dir is required: the folder of the images to encode")
    folder = Path(args.images_dir)
    stems = stems_with(folder, args.suffix)
    if not stems:
        raise UserError(f"{folder} holds no <stem>{args.suffix} images")
    images = (over_black(read_image(folder / f"{s}{args.suffix}")) for s in stems)
    count = write_video(Path(args.out), images, args.fps, total=len(stems))
    log.info("%d frames -> %s", count, args.out)
