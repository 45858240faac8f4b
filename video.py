#!/usr/bin/env python3
"""From a video file to a clip folder, and from results back to a video.

usage:
  video.py extract VIDEO --out WORKSPACE/CLIP [--every N] [--max_edge PX] [--start F] [--count C]
  video.py overlay --result RESULTS/CLIP_memN --dataroot WORKSPACE [--out overlay.mp4] [--fps 25]
  video.py encode --frames RESULTS/CLIP_memN/matte --out composite.mp4 [--suffix _comp.png] [--fps 25]

extract writes <index>_rgb.png frames (every Nth frame, optionally resized so that the longer
edge is at most PX) into a new clip folder; draw trimaps for a few of them as
<index>_trimap.png. overlay writes the ensembled trimaps over their frames as a video
(background darkened, unknown band orange). encode makes a video of a PNG sequence, such as the
composites of matte.py --background.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, read_image, stems_with
from evaluation.folders import read_labels
from evaluation.pictures import trimap_overlay, write_video
from inference.layout import ResultFolder
from matting.sequence import COMPOSITE_SUFFIX
from utils.errors import UserError, run_cli
from utils.io import atomic_write_png
from utils.logs import progress, setup_logging

log = logging.getLogger("video")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="video file -> clip folder of <index>_rgb.png")
    extract.add_argument("video", help="an .mp4/.avi/.mov file OpenCV can read")
    extract.add_argument("--out", required=True, help="the new clip folder (workspace/<clip>)")
    extract.add_argument("--every", type=int, default=1, help="keep every Nth frame")
    extract.add_argument("--max_edge", type=int, default=0, help="resize so the longer edge is at most this (0: keep)")
    extract.add_argument("--start", type=int, default=0, help="first frame to read")
    extract.add_argument("--count", type=int, default=0, help="at most this many frames written (0: all)")
    extract.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    overlay = commands.add_parser("overlay", help="ensembled trimaps -> overlay video")
    overlay.add_argument("--result", required=True, help="a result folder <clip>_mem<N> with ensemble/")
    overlay.add_argument("--dataroot", required=True, help="the workspace holding <clip>/<stem>_rgb.png")
    overlay.add_argument("--out", default=None, help="video path (.mp4 or .avi); default <result>/overlay.mp4")
    overlay.add_argument("--fps", type=float, default=25.0)
    overlay.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    encode = commands.add_parser("encode", help="a PNG sequence (e.g. matte.py's composites) -> video")
    encode.add_argument("--frames", required=True, help="folder of <stem><suffix> images, in stem order")
    encode.add_argument("--suffix", default=COMPOSITE_SUFFIX, help=f"which images (default {COMPOSITE_SUFFIX})")
    encode.add_argument("--out", required=True, help="video path (.mp4 or .avi)")
    encode.add_argument("--fps", type=float, default=25.0)
    encode.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resize_to_max_edge(frame: np.ndarray, max_edge: int) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = max_edge / max(height, width) if max_edge else 1.0
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def stem_digits(frame_count: int | None) -> int:
    """Digits of the zero-padded frame stems: enough for the last frame index, so that sorted file
    names stay in frame order (at least 5; 8 when the video does not say how long it is)."""
    if not frame_count:
        return 8
    return max(5, len(str(frame_count - 1)))


def extract(args: argparse.Namespace) -> None:
    video, out = Path(args.video), Path(args.out)
    if args.every < 1 or args.max_edge < 0 or args.start < 0 or args.count < 0:
        raise UserError("--every must be >= 1 and --max_edge, --start, --count >= 0")
    if not video.is_file():
        raise UserError(f"{video} does not exist")
    if stems_with(out, FRAME_SUFFIX):
        raise UserError(f"--out {out} already holds frames; extract into a new folder (nothing is overwritten)")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise UserError(f"OpenCV cannot read {video}; convert it to .mp4 (H.264) or .avi first")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    expected = None if total is None else max(0, (total - args.start + args.every - 1) // args.every)
    if args.count and expected is not None:
        expected = min(expected, args.count)
    digits = stem_digits(total)
    with progress(total=expected, desc=f"extract {video.name}", unit="frame") as bar:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= args.start and (index - args.start) % args.every == 0:
                atomic_write_png(out / f"{index:0{digits}d}{FRAME_SUFFIX}", resize_to_max_edge(frame, args.max_edge))
                written += 1
                bar.update(1)
                if args.count and written >= args.count:
                    break
            index += 1
    capture.release()
    if not written:
        raise UserError(f"{video}: no frames read (after --start {args.start}); is the file complete?")
    log.info(
        "%d frames (every %d of %s at %.3g fps) -> %s; next: draw <index>%s for a few keyframes",
        written, args.every, video.name, fps, out, TRIMAP_SUFFIX,
    )  # fmt: skip


def overlay(args: argparse.Namespace) -> None:
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


def over_black(image: np.ndarray) -> np.ndarray:
    """An 8-bit image as BGR; with an alpha channel, composited over black."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        return np.round(image[..., :3].astype(np.float32) * alpha).astype(np.uint8)
    return image


def encode(args: argparse.Namespace) -> None:
    """A video of a PNG sequence. Transparent images (the RGBA foregrounds) go over black; the PNG
    sequence itself stays the lossless result."""
    folder = Path(args.frames)
    stems = stems_with(folder, args.suffix)
    if not stems:
        raise UserError(f"{folder} holds no <stem>{args.suffix} images")
    images = (over_black(read_image(folder / f"{s}{args.suffix}")) for s in stems)
    count = write_video(Path(args.out), images, args.fps, total=len(stems))
    log.info("%d frames -> %s", count, args.out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    {"extract": extract, "overlay": overlay, "encode": encode}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
