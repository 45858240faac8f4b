"""``tgm.py demo`` = ``demo.py``: the whole method on a generated clip, offline (see pipeline/demo.py).

usage: demo.py [--out demo_out] [--load CKPT] [--steps 80] [--frames 16] [--size 128x224] [--device auto]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.demo import DemoSettings, run_demo
from utils.errors import UserError

NAME = "demo"
HELP = "The whole method on a generated clip, offline: finetune, propagate, ensemble, matte, evaluate, show."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="where everything goes (created)")
    parser.add_argument("--load", default=None, help="a checkpoint to propagate with instead of finetuning")
    parser.add_argument("--steps", type=int, default=80, help="finetuning steps")
    parser.add_argument("--frames", type=int, default=16, help="frames of the generated clip")
    parser.add_argument("--size", default="128x224", help="HEIGHTxWIDTH of the generated clip")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clip and of the training run")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")


def run(args: argparse.Namespace) -> None:
    try:
        height, width = (int(x) for x in args.size.lower().split("x"))
    except ValueError as exc:
        raise UserError(f"--size {args.size!r}: give HEIGHTxWIDTH, e.g. 128x224") from exc
    load = Path(args.load) if args.load else None
    run_demo(DemoSettings(Path(args.out), load, args.steps, args.frames, height, width, args.seed, args.device))
