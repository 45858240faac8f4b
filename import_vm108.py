#!/usr/bin/env python3
"""Turn the VideoMatting108 dataset into clip folders, keyframe trimaps and ground truth.

usage: import_vm108.py --root VideoMatting108 --out WS [--split val|train] [--videos V ...]
                       [--keyframes 0 ...] [--keyframe_every N] [--width narrow|medium|wide|PX]
                       [--max_edge PX] [--subset]

VideoMatting108 holds FG_done/<video>/<frame>.png (RGBA: foreground and its alpha matte),
BG_done/<background>/<frame>.jpg, frame_corr.json (FG frame -> BG frame) and
<split>_videos.txt (one video per line; *_subset.txt with --subset). Each frame is composited
(fg * alpha + bg * (1 - alpha)) into WS/<split>/<video>/<frame>_rgb.png; the ground truth goes to
WS/<split>_gt/<video>/<frame>_alpha.png and _trimap.png (unknown where 0 < alpha < 1, dilated by
--width: narrow 5, medium 12, wide 20 as in the TCVOM evaluation), and the keyframes' trimaps
are copied into the clip folders. Then: run_workspace.py --workspace WS/<split> --gt WS/<split>_gt.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX, read_image
from dataset.trimap import alpha_to_trimap
from utils.errors import UserError, run_cli
from utils.io import atomic_write_png
from utils.logs import progress, setup_logging

log = logging.getLogger("import_vm108")

FG_FOLDER, BG_FOLDER = "FG_done", "BG_done"
WIDTHS = {"narrow": 5, "medium": 12, "wide": 20}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the VideoMatting108 folder")
    parser.add_argument("--out", required=True, help="output root (a workspace per split is made in it)")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--subset", action="store_true", help="read <split>_videos_subset.txt")
    parser.add_argument("--videos", nargs="*", default=None, help="only these videos (default: the split's list)")
    parser.add_argument("--keyframes", nargs="*", type=int, default=[0], help="frame indices given a trimap")
    parser.add_argument("--keyframe_every", type=int, default=0, help="a keyframe every N frames (overrides)")
    parser.add_argument("--width", default="medium", help="unknown band: narrow (5), medium (12), wide (20) or px")
    parser.add_argument("--max_edge", type=int, default=0, help="downscale so the longer edge is at most this")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser.parse_args(argv)


def band_width(text: str) -> int:
    if text in WIDTHS:
        return WIDTHS[text]
    try:
        width = int(text)
    except ValueError as exc:
        raise UserError(f"--width {text!r}: use narrow, medium, wide or a number of pixels") from exc
    if width < 0:
        raise UserError(f"--width {width}: must be >= 0")
    return width


def video_frames(frame_corr: dict[str, str], video: str) -> list[tuple[str, str]]:
    """(FG frame, BG frame) pairs of one video, in frame order."""
    return [(fg, frame_corr[fg]) for fg in sorted(frame_corr) if str(PurePosixPath(fg).parent) == video]


def composite(fg_path: Path, bg_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(composited BGR uint8, alpha uint8) of one frame; the background is resized to the fg."""
    fg = read_image(fg_path)
    if fg.ndim != 3 or fg.shape[2] != 4:
        raise UserError(f"{fg_path} is not an RGBA image; VideoMatting108 foregrounds carry their matte as alpha")
    bg = read_image(bg_path, cv2.IMREAD_COLOR)
    if bg.shape[:2] != fg.shape[:2]:
        bg = cv2.resize(bg, (fg.shape[1], fg.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = fg[..., 3:].astype(np.float32) / 255.0
    image = fg[..., :3].astype(np.float32) * alpha + bg.astype(np.float32) * (1.0 - alpha)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), fg[..., 3].copy()


def shrink(image: np.ndarray, max_edge: int) -> np.ndarray:
    height, width = image.shape[:2]
    if not max_edge or max(height, width) <= max_edge:
        return image
    scale = max_edge / max(height, width)
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


def import_video(args: argparse.Namespace, root: Path, out: Path, video: str, pairs, width: int) -> int:
    clip_dir = out / args.split / video
    gt_dir = out / f"{args.split}_gt" / video
    clip_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    count = len(pairs)
    keyframes = set(range(0, count, args.keyframe_every)) if args.keyframe_every else set(args.keyframes)
    bad = sorted(k for k in keyframes if not 0 <= k < count)
    if bad:
        raise UserError(f"--keyframes {bad[0]} is outside video {video}'s {count} frames")
    for index, (fg_name, bg_name) in enumerate(progress(pairs, desc=video, unit="frame")):
        stem = PurePosixPath(fg_name).stem
        image, alpha = composite(root / FG_FOLDER / fg_name, root / BG_FOLDER / bg_name)
        image, alpha = shrink(image, args.max_edge), shrink(alpha, args.max_edge)
        trimap = alpha_to_trimap(alpha, width)
        atomic_write_png(clip_dir / f"{stem}{FRAME_SUFFIX}", image)
        atomic_write_png(gt_dir / f"{stem}{ALPHA_SUFFIX}", alpha)
        atomic_write_png(gt_dir / f"{stem}{TRIMAP_SUFFIX}", trimap)
        if index in keyframes:
            atomic_write_png(clip_dir / f"{stem}{TRIMAP_SUFFIX}", trimap)
    return count


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    root, out = Path(args.root), Path(args.out)
    width = band_width(args.width)
    corr_path = root / "frame_corr.json"
    list_path = root / f"{args.split}_videos{'_subset' if args.subset else ''}.txt"
    for path in (root / FG_FOLDER, root / BG_FOLDER, corr_path, list_path):
        if not path.exists():
            raise UserError(f"{path} is missing: --root must be the VideoMatting108 folder")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside --root {root}; nothing is written into the dataset")
    try:
        frame_corr = json.loads(corr_path.read_text())
    except ValueError as exc:
        raise UserError(f"{corr_path} is not valid JSON ({exc})") from exc
    listed = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    videos = args.videos or listed
    for video in videos:
        if not video_frames(frame_corr, video):
            raise UserError(f"{corr_path} names no frames of video {video!r}")
    total = 0
    for video in videos:
        total += import_video(args, root, out, video, video_frames(frame_corr, video), width)
    log.info(
        "%d videos, %d frames -> %s (ground truth: %s; unknown band %d px). Next: python run_workspace.py "
        "--workspace %s --save results --gt %s",
        len(videos), total, out / args.split, out / f"{args.split}_gt", width, out / args.split,
        out / f"{args.split}_gt",
    )  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
