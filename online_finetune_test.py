#!/usr/bin/env python3
"""Finetune the STM on a clip's keyframes before propagating (online finetuning).

usage: online_finetune_test.py --cfg clip.yaml [--gpu N] [--device D] [KEY VALUE ...]

The published script's name and flags, over ``tgm.py finetune`` (commands/finetune.py).
"""

from __future__ import annotations

from commands import finetune, run_command
from utils.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    run_command(finetune, argv, prog="online_finetune_test.py")


if __name__ == "__main__":
    run_cli(main)
