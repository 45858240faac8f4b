"""``tgm.py encode``: an image sequence (trimaps, overlays, alpha mattes, foregrounds, composites) as a video.

usage: tgm.py encode --images_dir RESULTS/CLIP_memN/matte --out composite.mp4 [--suffix _comp.png]
                     [--fps 25 | --source VIDEO]
       tgm.py encode --images_dir RESULTS/CLIP_memN/matte --suffix _fg.png --out FOLDER --exr zip|piz

The codec follows the file type: .mp4 (H.264), .avi (MPEG-4), .mov (ProRes: 4444 with alpha for
RGBA images such as the foregrounds <stem>_fg.png, an editor's matte), .mkv (FFV1, lossless, with
alpha). Transparent images go over black in a video without alpha. Numeric stems are the frames'
numbers in the source: each frame keeps its time (a clip of every other frame stays in step with
its source), at --fps or the frame rate of --source. The PNG sequence itself stays the lossless result.
Video colours are converted with the BT.709 matrix and tagged so (docs/compositing.md).

With --exr the images become an OpenEXR sequence in the folder --out instead (``utils/exr.py``): a
grey image (an alpha matte) one half-float channel A, an RGBA image (a foreground) RGBA half floats,
an RGB image RGBA with alpha 1; colours in linear light, premultiplied by alpha. Each keeps its stem:
``<stem>_fg.png`` becomes ``<stem>_fg.exr``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import stems_with
from dataset.video import DEFAULT_FPS, SOURCE_RECORD, WRITERS, frame_numbers, probe_video, source_fps
from evaluation.pictures import over_black, write_video
from matting.sequence import COMPOSITE_SUFFIX
from utils.cli import add_renamed
from utils.errors import UserError
from utils.exr import COMPRESSIONS, write_foreground_exr, write_matte_exr
from utils.images import read_image, to_8bit
from utils.io import ensure_writable_dir
from utils.logs import progress

NAME = "encode"
HELP = "An image sequence (trimaps, overlays, mattes, foregrounds, composites) as a video; alpha in .mov/.mkv."
log = logging.getLogger("encode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images_dir", default=None, help="folder of <stem><suffix> images, in stem order (required)")
    add_renamed(parser, "--frames", "--images_dir", "images_dir")
    parser.add_argument(
        "--suffix", default=COMPOSITE_SUFFIX, help=f"which images (default {COMPOSITE_SUFFIX}; _fg.png: RGBA "
        "foregrounds, _alpha.png: mattes, _trimap.png: trimaps, .png: overlays)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help=f"video path ({', '.join(WRITERS)}), or with --exr a folder")
    parser.add_argument("--exr", choices=COMPRESSIONS, default=None, help="an OpenEXR sequence in the folder --out "
                        "instead of a video, with this compression (mattes: channel A; foregrounds: RGBA, linear, "
                        "premultiplied)")  # fmt: skip
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, default=None, help=f"frame rate (default {DEFAULT_FPS:g})")
    rate.add_argument("--source", default=None, help="the clip's video, or a folder tgm.py extract made (its "
                      "source.json): its frame rate is kept")  # fmt: skip


def for_video(image: np.ndarray, keep_alpha: bool) -> np.ndarray:
    """An image as 8-bit BGR, or BGRA when it has alpha and the video keeps it."""
    if keep_alpha and image.ndim == 3 and image.shape[2] == 4:
        return to_8bit(image)
    return over_black(image)


def run(args: argparse.Namespace) -> None:
    if args.images_dir is None:
        raise UserError("--images_dir is required: the folder of the images to encode")
    folder, out = Path(args.images_dir), Path(args.out)
    stems = stems_with(folder, args.suffix)
    if not stems:
        raise UserError(f"{folder} holds no <stem>{args.suffix} images")
    if args.exr:
        write_exr_sequence(folder, stems, args.suffix, ensure_writable_dir(out, "--out"), args.exr)
        return
    if out.suffix.lower() not in WRITERS:
        raise UserError(f"--out {out}: write the video as one of {', '.join(WRITERS)} (or an EXR sequence: --exr)")
    if args.source and Path(args.source).is_dir():
        fps = source_fps(Path(args.source))
        if fps is None:
            raise UserError(f"--source {args.source} holds no {SOURCE_RECORD} (tgm.py extract writes it): give --fps")
    else:
        fps = float(probe_video(Path(args.source)).fps) if args.source else (args.fps or DEFAULT_FPS)
    if fps <= 0:
        raise UserError(f"--fps {fps}: must be > 0")
    keep_alpha = WRITERS[out.suffix.lower()][2] is not None
    images = (for_video(read_image(folder / f"{s}{args.suffix}", cv2.IMREAD_UNCHANGED), keep_alpha) for s in stems)
    count = write_video(out, images, fps, total=len(stems), frame_numbers=frame_numbers(stems))
    log.info("%d frames at %.3g fps -> %s", count, fps, out)


def write_exr_sequence(folder: Path, stems: list[str], suffix: str, out: Path, compression: str) -> None:
    """``<stem><suffix>`` images of ``folder`` as ``<stem><suffix, .exr>`` in ``out``."""
    name_of = suffix.removesuffix(".png")  # _fg.png -> <stem>_fg.exr, .png -> <stem>.exr
    for stem in progress(stems, desc=f"{name_of or 'images'} -> EXR", unit="frame"):
        image = read_image(folder / f"{stem}{suffix}", cv2.IMREAD_UNCHANGED)
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        values = image.astype(np.float64) / scale
        path = out / f"{stem}{name_of}.exr"
        if values.ndim == 2:
            write_matte_exr(path, values, compression)
        elif values.shape[2] == 4:
            write_foreground_exr(path, values[..., 2::-1], values[..., 3], compression)  # OpenCV reads BGRA
        else:
            write_foreground_exr(path, values[..., ::-1], np.ones(values.shape[:2]), compression)
    log.info("%d frames -> %s (EXR, %s)", len(stems), out, compression)
