"""``tgm.py import-vm108``: the VideoMatting108 dataset as clip folders, keyframe trimaps and ground truth.

usage: tgm.py import-vm108 --root VideoMatting108 --out WS [--split val|train] [--videos V ...]
                           [--keyframes 0 ...] [--keyframe_every N] [--band_diameter narrow|medium|wide|PX]
                           [--max_edge PX] [--subset] [--overwrite]

Each frame is composited into WS/<split>/<video>/<frame>_rgb.png; the ground truth goes to
WS/<split>_gt/<video>/<frame>_alpha.png and _trimap.png (unknown where 0 < alpha < 1, widened
with a kernel of --band_diameter px: narrow 5, medium 12, wide 20 as in the TCVOM evaluation),
and the keyframes' trimaps are copied into the clip folders. An existing import is replaced only
with --overwrite. Then: tgm.py workspace --workspace WS/<split> --gt WS/<split>_gt.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dataset.vm108 import Dataset, ImportSettings, band_diameter, import_video
from utils.cli import add_renamed
from utils.errors import UserError

NAME = "import-vm108"
HELP = "Turn the VideoMatting108 dataset into clip folders, keyframe trimaps and ground truth."
log = logging.getLogger("import_vm108")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="the VideoMatting108 folder")
    parser.add_argument("--out", required=True, help="output root (a workspace per split is made in it)")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--subset", action="store_true", help="read <split>_videos_subset.txt")
    parser.add_argument("--videos", nargs="*", default=None, help="only these videos (default: the split's list)")
    parser.add_argument("--keyframes", nargs="*", type=int, default=[0], help="frame indices given a trimap")
    parser.add_argument("--keyframe_every", type=int, default=0, help="a keyframe every N frames (overrides)")
    parser.add_argument("--band_diameter", default="medium",
                        help="unknown band kernel: narrow (5), medium (12), wide (20) or px across")  # fmt: skip
    add_renamed(parser, "--width", "--band_diameter", "band_diameter")
    parser.add_argument("--max_edge", type=int, default=0, help="downscale so the longer edge is at most this")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier import of the same videos")


def guarded_paths(args: argparse.Namespace) -> list:
    return [(Path(args.out), "--out", Path(args.root), "--root")]


def run(args: argparse.Namespace) -> None:
    root, out = Path(args.root), Path(args.out)
    diameter = band_diameter(args.band_diameter)
    data = Dataset.open(root, args.split, args.subset)
    videos = args.videos or data.listed
    for video in videos:
        if not data.video_frames(video):
            raise UserError(f"{root / 'frame_corr.json'} names no frames of video {video!r}")
    settings = ImportSettings(
        args.split, tuple(args.keyframes), args.keyframe_every, diameter, args.max_edge, args.overwrite
    )
    total = sum(import_video(data, out, video, settings) for video in videos)
    log.info(
        "%d videos, %d frames -> %s (ground truth: %s; unknown band kernel %d px). Next: python tgm.py workspace "
        "--workspace %s --save results --gt %s",
        len(videos), total, out / args.split, out / f"{args.split}_gt", diameter, out / args.split,
        out / f"{args.split}_gt",
    )  # fmt: skip
