"""``tgm.py trimap``: make keyframe trimaps from binary masks or alpha mattes, and check hand-drawn ones.

usage:
  tgm.py trimap from-mask INPUT --out OUTPUT [--band_per_side W | --fg_band_per_side W --bg_band_per_side W]
                          [--threshold T]
  tgm.py trimap from-alpha INPUT --out OUTPUT [--band_diameter D]
  tgm.py trimap from-box FRAME --box x0,y0,x1,y1 [--fg_strokes PNG] [--bg_strokes PNG] --out TRIMAP [--band_per_side W]
  tgm.py trimap from-person FRAMES... --out OUTPUT [--band_per_side W]      (optional extra, see docs/keyframes.md)
  tgm.py trimap check INPUT [--out OUTPUT | --in_place]

INPUT and OUTPUT are both files or both folders; in a folder from-mask and from-alpha convert
every image, named <stem>_trimap.png (a _mask, _alpha, _matte or _trimap suffix of the input is
dropped), ready to go next to <stem>_rgb.png in a clip folder, and check takes only its
<stem>_trimap.png files (a clip folder's frames are never touched). Nothing is overwritten
without --overwrite; check replaces originals only with --in_place, keeping each as
<stem>_trimap.orig.png, after every one was read and checked. from-box cuts the subject out of a
frame with GrabCut from a box around it and/or strokes (white on black PNGs of the frame's size:
sure foreground, sure background); add strokes where it went wrong and run it again. from-person
finds the people in frames (files or clip folders) with MediaPipe's selfie segmenter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dataset import trimap_tools
from utils.cli import add_debug_argument, add_renamed
from utils.errors import UserError

NAME = "trimap"
HELP = "Make keyframe trimaps from masks, mattes, a box (+ strokes) or people, and check hand-drawn ones."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True)
    mask = commands.add_parser("from-mask", help="binary masks (0/255, 0/1 or grey) -> trimaps")
    mask.add_argument("input", help="a mask file or a folder of masks")
    mask.add_argument("--out", required=True, help="the trimap file, or a folder for <stem>_trimap.png")
    mask.add_argument("--band_per_side", type=int, default=10, help="unknown band: pixels on each side of the edge")
    mask.add_argument(
        "--fg_band_per_side", type=int, default=None, help="band inside the mask (default: --band_per_side)"
    )
    mask.add_argument("--bg_band_per_side", type=int, default=None, help="band outside (default: --band_per_side)")
    add_renamed(mask, "--width", "--band_per_side", "band_per_side", type=int)
    add_renamed(mask, "--fg-width", "--fg_band_per_side", "fg_band_per_side", type=int)
    add_renamed(mask, "--bg-width", "--bg_band_per_side", "bg_band_per_side", type=int)
    mask.add_argument("--threshold", type=float, default=None,
                      help="grey masks: foreground above this (0-255; default 127, or 0 for 0/1 masks)")  # fmt: skip
    alpha = commands.add_parser("from-alpha", help="alpha mattes -> trimaps (unknown where 0 < alpha < 1)")
    alpha.add_argument("input", help="an alpha matte or a folder of them (8- or 16-bit)")
    alpha.add_argument("--out", required=True, help="the trimap file, or a folder for <stem>_trimap.png")
    alpha.add_argument("--band_diameter", type=int, default=10,
                       help="widen the band: elliptical kernel this many px across")  # fmt: skip
    add_renamed(alpha, "--width", "--band_diameter", "band_diameter", type=int)
    box = commands.add_parser("from-box", help="a frame + a box around the subject (+ strokes) -> its trimap")
    box.add_argument("input", help="the frame (an image file)")
    box.add_argument("--box", default=None, help="x0,y0,x1,y1 in pixels around the subject")
    box.add_argument("--fg_strokes", "--fg-strokes", default=None, help="PNG, white = sure foreground")
    box.add_argument("--bg_strokes", "--bg-strokes", default=None, help="PNG, white = sure background")
    box.add_argument("--out", required=True, help="the trimap file (.png)")
    person = commands.add_parser("from-person", help="frames -> trimaps of the people in them (optional extra)")
    person.add_argument("input", nargs="+", help="frames: image files or clip folders of <stem>_rgb.png")
    person.add_argument("--out", required=True, help="a folder for <stem>_trimap.png (a .png file for one frame)")
    for sub in (box, person):
        sub.add_argument("--band_per_side", type=int, default=10, help="unknown band: pixels on each side of the edge")
        add_renamed(sub, "--width", "--band_per_side", "band_per_side", type=int)
    check = commands.add_parser("check", help="report on hand-drawn trimaps; write cleaned 0/128/255 copies")
    check.add_argument("input", help="a trimap or a folder of trimaps")
    check.add_argument("--out", default=None, help="where the cleaned copies go (file or folder)")
    check.add_argument("--in_place", action="store_true", help="replace the originals (each kept once as .orig.png)")
    for sub in (mask, alpha, box, person, check):
        sub.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        add_debug_argument(sub)


def run(args: argparse.Namespace) -> None:
    source = Path(args.input) if isinstance(args.input, str) else None  # from-person takes several
    if args.command == "from-mask":
        fg = args.band_per_side if args.fg_band_per_side is None else args.fg_band_per_side
        bg = args.band_per_side if args.bg_band_per_side is None else args.bg_band_per_side
        if min(fg, bg) < 0:
            raise UserError("--band_per_side, --fg_band_per_side and --bg_band_per_side must be >= 0")
        if args.threshold is not None and not 0 <= args.threshold < 255:
            raise UserError(f"--threshold {args.threshold}: give a grey level from 0 to 254")
        threshold = None if args.threshold is None else args.threshold / 255
        trimap_tools.from_mask(source, Path(args.out), fg, bg, threshold, args.overwrite)
    elif args.command in ("from-box", "from-person"):
        if args.band_per_side < 0:
            raise UserError(f"--band_per_side {args.band_per_side}: must be >= 0")
        if args.command == "from-box":
            if args.box is None and args.fg_strokes is None:
                raise UserError("from-box needs --box x0,y0,x1,y1 around the subject (or --fg_strokes)")
            strokes = [Path(p) if p else None for p in (args.fg_strokes, args.bg_strokes)]
            trimap_tools.from_box(source, Path(args.out), args.box, args.band_per_side, *strokes, args.overwrite)
        else:
            trimap_tools.from_person([Path(p) for p in args.input], Path(args.out), args.band_per_side, args.overwrite)
    elif args.command == "from-alpha":
        if args.band_diameter < 0:
            raise UserError(f"--band_diameter {args.band_diameter}: must be >= 0")
        trimap_tools.from_alpha(source, Path(args.out), args.band_diameter, args.overwrite)
    else:
        out = Path(args.out) if args.out else None
        reports = trimap_tools.check(source, out, args.in_place, args.overwrite)
        if out is None and not args.in_place:
            print(f"{len(reports)} trimap(s) checked; write cleaned copies with --out (or --in_place)")
