#!/usr/bin/env python3
"""The whole method on a generated clip, offline: finetune, propagate, ensemble, matte, evaluate, show.

usage: demo.py [--out demo_out] [--load CKPT] [--steps 80] [--frames 16] [--size 128x224] [--device auto]

The Quick start's first command; the same as ``tgm.py demo`` (commands/demo.py, pipeline/demo.py).
"""

from __future__ import annotations

from commands import demo, run_command
from utils.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    run_command(demo, argv, prog="demo.py")


if __name__ == "__main__":
    run_cli(main)
