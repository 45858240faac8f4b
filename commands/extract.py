"""``tgm.py extract``: from a video file to a clip folder of ``<index>_rgb.png`` frames.

usage: tgm.py extract VIDEO --out WORKSPACE/CLIP [--every N] [--max_edge PX] [--start F] [--count C]

Writes every Nth frame (optionally resized so that the longer edge is at most PX) into a new clip
folder; draw trimaps for a few of them as <index>_trimap.png. A video can also be a clip as it is
(DATASET.PATH: the video; no extraction): its frames are decoded the same way, so frame i of the
video clip is byte for byte the PNG extracted here, under the same stem.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dataset.clip import TRIMAP_SUFFIX
from dataset.video import Extraction, extract_frames

NAME = "extract"
HELP = "From a video file to a clip folder of <index>_rgb.png frames."
log = logging.getLogger("extract")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file (.mp4, .mov, .mkv, .avi, ...; decoded with PyAV/FFmpeg)")
    parser.add_argument("--out", required=True, help="the new clip folder (workspace/<clip>)")
    parser.add_argument("--every", type=int, default=1, help="keep every Nth frame")
    parser.add_argument("--max_edge", type=int, default=0, help="resize so the longer edge is at most this (0: keep)")
    parser.add_argument("--start", type=int, default=0, help="first frame to read")
    parser.add_argument("--count", type=int, default=0, help="at most this many frames written (0: all)")


def run(args: argparse.Namespace) -> None:
    video, out = Path(args.video), Path(args.out)
    settings = Extraction(args.every, args.max_edge, args.start, args.count)
    written, fps = extract_frames(video, out, settings)
    log.info(
        "%d frames (every %d of %s at %.3g fps) -> %s; next: draw <index>%s for a few keyframes",
        written, args.every, video.name, fps, out, TRIMAP_SUFFIX,
    )  # fmt: skip
