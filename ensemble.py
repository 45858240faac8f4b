#!/usr/bin/env python3
"""Fuse the parts written by test_mf_2.py into one trimap per frame.

usage: ensemble.py --predroot results --dataroot workspace [result_or_clip ...]

The published script's name and flags, over ``tgm.py ensemble`` (commands/ensemble.py).
"""

from __future__ import annotations

from commands import ensemble, run_command
from utils.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    run_command(ensemble, argv, prog="ensemble.py")


if __name__ == "__main__":
    run_cli(main)
