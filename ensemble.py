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

from utils.ensemble import MEM_SUFFIX, ResultCheck, clip_name, ensemble_result
from utils.errors import UserError, run_cli
from utils.io import BackgroundWriter
from utils.logs import setup_logging

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
