#!/usr/bin/env python3
"""Propagate a clip's keyframe trimaps to every frame, forward and backward, part by part.

usage: test_mf_2.py --cfg clip.yaml --load ckpt.pth --save results [--mem_every N]
                    [--max_memory M] [--device auto|cpu|cuda|cuda:N|mps] [KEY VALUE ...]

The published script's name and flags, over ``tgm.py propagate`` (commands/propagate.py).
"""

from __future__ import annotations

from commands import propagate, run_command
from utils.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    run_command(propagate, argv, prog="test_mf_2.py")


if __name__ == "__main__":
    run_cli(main)
