"""``tgm.py matte``: alpha mattes, foreground colours and composites from trimaps: the step trimaps exist for.

usage: tgm.py matte (--result RESULTS/<clip>_mem<N> | --trimaps DIR --out DIR) [--dataroot WS | --frames_dir CLIP]
                [--method cf|knn|lkm] [--workers N] [--tolerance T] [--alpha16] [--background B]
                [--overwrite]

For every frame with a trimap (the ensembled ones of a result folder, or any <stem>_trimap.png in
--trimaps: ground truth, hand-made) writes <stem>_alpha.png and <stem>_fg.png (RGBA: estimated
foreground colours with the alpha, the lossless result) into <result>/matte/ (or --out), and with
--background (a colour, an image or a video) <stem>_comp.png; tgm.py encode makes a video of
them. Frames already matted are skipped (resumable) unless --overwrite. A frame that cannot be
matted is reported and the others go on; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, locate_clip, open_clip_frames, stems_with
from inference.layout import ResultFolder
from matting.background import Background
from matting.sequence import MatteFrame, MatteSettings, matte_clip
from matting.solve import METHODS, Solver
from utils.cli import add_renamed
from utils.errors import UserError
from utils.exr import COMPRESSIONS
from utils.io import FolderLock

NAME = "matte"
HELP = "Alpha mattes, foreground colours and composites from trimaps: the step trimaps exist for."
log = logging.getLogger("matte")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--result", help="a result folder <clip>_mem<N> with ensemble/")
    source.add_argument("--trimaps", help="a folder of <stem>_trimap.png (ground truth, hand-made, ...)")
    parser.add_argument(
        "--dataroot", help="the workspace holding <clip>/<stem>_rgb.png or the video <clip>.mp4 (with --result)"
    )
    parser.add_argument(
        "--frames_dir", help="the clip folder holding <stem>_rgb.png, or the clip's video (instead of --dataroot)"
    )
    add_renamed(parser, "--frames", "--frames_dir", "frames_dir")
    parser.add_argument("--out", help="output folder (default: <result>/matte)")
    parser.add_argument(
        "--method", choices=METHODS, default="cf", help="cf closed-form (default), knn, lkm large-kernel"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes matting frames in parallel")
    parser.add_argument("--tolerance", type=float, default=1e-7, help="solver: relative residual to stop at")
    parser.add_argument("--alpha16", action="store_true", help="write 16-bit alpha mattes")
    parser.add_argument(
        "--exr", choices=COMPRESSIONS, default=None, help="also write <stem>_alpha.exr (one half-float channel A) and "
        "<stem>_fg.exr (RGBA half, linear Rec.709, premultiplied) with this compression (docs/compositing.md)",
    )  # fmt: skip
    parser.add_argument("--background", help="composite over: a colour (green, #00b140, 0,177,64), an image or a video")
    parser.add_argument("--overwrite", action="store_true", help="redo frames already matted")


def frames_to_matte(args: argparse.Namespace) -> tuple[list[MatteFrame], Path]:
    """The frames with a trimap, in clip order, and the output folder."""
    if args.result:
        result = ResultFolder(args.result)
        trimaps, stems = result.ensemble_dir, result.ensemble_stems()
        if not stems:
            raise UserError(
                f"{result.ensemble_dir} holds no fused trimaps; run ensemble.py --predroot {result.path.parent}"
            )
        clip_dir = (
            Path(args.frames_dir)
            if args.frames_dir
            else (locate_clip(Path(args.dataroot), result.clip_name) if args.dataroot else None)
        )
        out = Path(args.out) if args.out else result.matte_dir
    else:
        trimaps, stems = Path(args.trimaps), stems_with(Path(args.trimaps), TRIMAP_SUFFIX)
        if not stems:
            raise UserError(f"--trimaps {trimaps} holds no <stem>{TRIMAP_SUFFIX} files")
        clip_dir = Path(args.frames_dir) if args.frames_dir else None
        if args.out is None:
            raise UserError("--trimaps needs --out: where the mattes go")
        out = Path(args.out)
    if clip_dir is None:
        raise UserError("say where the frames are: --dataroot WORKSPACE (with --result) or --frames_dir CLIP_FOLDER")
    if not clip_dir.exists():
        raise UserError(f"{clip_dir} does not exist; check --dataroot / --frames_dir")
    clip_frames = open_clip_frames(clip_dir)  # a video is only probed here
    order = clip_frames.stems
    missing = sorted(set(stems) - set(order))
    if missing:
        what = (
            f"{clip_dir} has no frame {missing[0]}"
            if clip_frames.is_video
            else f"{clip_frames.describe(missing[0])} is missing"
        )
        raise UserError(f"{what} ({len(missing)} trimaps without a frame)")
    index = {stem: i for i, stem in enumerate(order)}

    def frame_of(stem: str) -> Path:
        return clip_dir if clip_frames.is_video else clip_dir / f"{stem}{FRAME_SUFFIX}"

    items = [MatteFrame(s, index[s], frame_of(s), trimaps / f"{s}{TRIMAP_SUFFIX}") for s in stems]
    return sorted(items, key=lambda item: item.index), out


def run(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be >= 1")
    if not 0 < args.tolerance < 1:
        raise UserError(f"--tolerance {args.tolerance}: give a relative residual between 0 and 1, e.g. 1e-6")
    background = Background.parse(args.background) if args.background else None
    frames, out = frames_to_matte(args)
    settings = MatteSettings(out, Solver(args.method, args.tolerance), args.alpha16, background, args.exr)
    with contextlib.ExitStack() as held:  # the result folder too: a propagation must not clear ensemble/ now
        if args.result:
            held.enter_context(ResultFolder(args.result).lock())
        held.enter_context(FolderLock(out, "matting (--out)", named_here=args.out is None))  # <result>/matte
        report = matte_clip(frames, settings, args.workers, args.overwrite)
    for stem, why in sorted(report.notes.items()):
        log.info("frame %s: %s (the trimap allows no other answer)", stem, why)
    for why in sorted(set(report.notes.values())):  # one line per reason, for a person (and the app's page)
        stems = sorted(s for s, w in report.notes.items() if w == why)
        shown = ", ".join(stems[:8]) + (f" and {len(stems) - 8} more" if len(stems) > 8 else "")
        log.warning(
            "%d of %d frames: %s (%s): their trimaps hold no subject or no background to matte against; check the "
            "keyframes and the propagated trimaps", len(stems), len(frames), why, shown,
        )  # fmt: skip
    for stem, reason in sorted(report.failed.items()):
        log.error("frame %s: %s", stem, reason)
    seconds = sum(report.seconds.values()) / max(len(report.seconds), 1)
    log.info(
        "%d frames matted (%.2f s per frame, %s, %d workers), %d skipped, %d failed -> %s",
        len(report.done), seconds, args.method, args.workers, len(report.skipped), len(report.failed), out,
    )  # fmt: skip
    if report.failed:
        log.error("%d frame(s) could not be matted: %s", len(report.failed), ", ".join(sorted(report.failed)))
        sys.exit(1)
