#!/usr/bin/env python3
"""Fuse the parts written by test_mf_2.py into one trimap per frame.

usage: ensemble.py --predroot results --dataroot workspace [result_or_clip ...]

For every result folder under --predroot (or those named: a folder name such as clip_mem5, or a
clip name standing for all its clip_mem* folders) writes ensemble/<stem>_trimap.png (0/128/255)
and envis/<stem>.png (half frame, half trimap; needs --dataroot/<clip>/<stem>_rgb.png).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from dataset.clip import FRAME_SUFFIX, image_size, read_image
from dataset.trimap import encode_labels
from utils.ensemble import MEM_SUFFIX, clip_name, frames_of, fuse, overlay, read_conf
from utils.errors import UserError, run_cli
from utils.io import BackgroundWriter, atomic_write_png, ensure_writable_dir
from utils.logs import progress, setup_logging

log = logging.getLogger("ensemble")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predroot", required=True, help="the --save folder of test_mf_2.py")
    parser.add_argument("--dataroot", default=None, help="the workspace holding <clip>/<stem>_rgb.png (for envis/)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("results", nargs="*", help="result folders (clip_memN) or clip names; default: all")
    return parser.parse_args(argv)


def find_result_dirs(predroot: Path, names: list[str]) -> list[Path]:
    if not predroot.is_dir():
        raise UserError(f"--predroot {predroot} is not a folder; pass the --save folder of test_mf_2.py")
    if not names:
        unfinished = sorted(
            p for p in predroot.iterdir() if MEM_SUFFIX.search(p.name) and not (p / "conf.json").exists()
        )
        if unfinished:
            raise UserError(
                f"{unfinished[0] / 'conf.json'} is missing: {unfinished[0]} is an unfinished test_mf_2.py run; "
                "rerun it (or name the result folders to fuse)"
            )
        found = sorted(p for p in predroot.iterdir() if p.is_dir() and (p / "conf.json").exists())
        if not found:
            raise UserError(
                f"--predroot {predroot} has no result folders with a conf.json; "
                f"run test_mf_2.py --save {predroot} first (a folder without conf.json is an unfinished run: rerun it)"
            )
        return found
    result = []
    for name in names:
        direct = predroot / name
        matches = [direct] if direct.is_dir() else sorted(predroot.glob(f"{name}_mem*"))
        matches = [m for m in matches if m.is_dir() and clip_name(m.name) in (clip_name(name), name)]
        if not matches:
            raise UserError(
                f"no result folder {predroot / name} (nor {name}_mem*); names must be folders under --predroot"
            )
        result.extend(matches)
    return result


class ResultCheck:
    """What one result folder holds, checked before anything is written."""

    def __init__(self, result_dir: Path, dataroot: Path | None) -> None:
        self.dir = result_dir
        conf_path = result_dir / "conf.json"
        if not conf_path.exists():
            raise UserError(
                f"{conf_path} is missing: {result_dir} is not a finished test_mf_2.py result; rerun test_mf_2.py"
            )
        try:
            self.conf = read_conf(result_dir)
        except (ValueError, OSError) as exc:
            raise UserError(f"{conf_path} is not a readable conf.json ({exc}); rerun test_mf_2.py") from exc
        self.frames = frames_of(self.conf)
        size = None
        for stem, parts in self.frames.items():
            for k, _ in parts:
                png = self.part_png(k, stem)
                if not png.exists():
                    raise UserError(
                        f"{png} is missing but conf.json names frame {stem} in part {k}; rerun test_mf_2.py"
                    )
                this = image_size(png)
                if size is None:
                    size, first = this, png
                elif this != size:
                    raise UserError(
                        f"{png} is {this[1]}x{this[0]} but {first} is {size[1]}x{size[0]}; "
                        "the parts of one result must have one size (rerun test_mf_2.py into an empty --save)"
                    )
        self.rgb_dir = None
        if dataroot is not None:
            self.rgb_dir = dataroot / clip_name(result_dir.name)
            for stem in self.frames:
                rgb = self.rgb_dir / f"{stem}{FRAME_SUFFIX}"
                if not rgb.exists():
                    raise UserError(
                        f"{rgb} is missing: the overlay of frame {stem} needs it; check --dataroot "
                        f"(the folder holding {clip_name(result_dir.name)}/)"
                    )

    def part_png(self, k: int, stem: str) -> Path:
        return self.dir / f"part{k}" / f"{stem}_tri.png"


def ensemble_result(check: ResultCheck, writer: BackgroundWriter) -> int:
    """Write ensemble/ (and envis/ when frames are known) for one result folder."""
    out = ensure_writable_dir(check.dir / "ensemble", "ensemble output")
    vis = ensure_writable_dir(check.dir / "envis", "overlay output") if check.rgb_dir is not None else None
    for stem, parts in progress(check.frames.items(), desc=check.dir.name, unit="frame"):
        pngs = [read_image(check.part_png(k, stem), cv2.IMREAD_COLOR) for k, _ in parts]
        labels = fuse(pngs, [w for _, w in parts])
        writer.submit(atomic_write_png, out / f"{stem}_trimap.png", encode_labels(labels))
        if vis is not None:
            frame = read_image(check.rgb_dir / f"{stem}{FRAME_SUFFIX}", cv2.IMREAD_COLOR)
            writer.submit(atomic_write_png, vis / f"{stem}.png", overlay(frame, labels))
    writer.flush()
    return len(check.frames)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    dataroot = Path(args.dataroot) if args.dataroot else None
    if dataroot is not None and not dataroot.is_dir():
        raise UserError(f"--dataroot {dataroot} is not a folder; pass the workspace that holds the clip folders")
    result_dirs = find_result_dirs(Path(args.predroot), args.results)
    checks = [ResultCheck(d, dataroot) for d in result_dirs]
    if dataroot is None:
        log.info("no --dataroot: writing ensemble/ only, no envis/ overlays")
    writer = BackgroundWriter()
    try:
        for check in checks:
            count = ensemble_result(check, writer)
            log.info("%s: %d frames -> %s", check.dir.name, count, check.dir / "ensemble")
    finally:
        writer.close()


if __name__ == "__main__":
    run_cli(main)
