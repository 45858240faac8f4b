#!/usr/bin/env python3
"""Propagate a clip's keyframe trimaps to every frame, forward and backward, part by part.

usage: test_mf_2.py --cfg clip.yaml --load ckpt.pth --save results [--mem_every N]
                    [--max_memory M] [--device auto|cpu|cuda|cuda:N|mps] [KEY VALUE ...]

Writes <save>/<clip>_mem<N>/part<k>/<stem>_tri.png (3-class probabilities, 8-bit) and conf.json;
fuse them with ensemble.py. Under ``torchrun --nproc_per_node N test_mf_2.py ...`` the parts are
shared out among the ranks (one GPU each, or the CPU with --device cpu).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from config import load_config
from inference.options import PropagationOptions, add_propagation_arguments
from pipeline.clip import open_clip, run_clip
from utils.cli import add_config_arguments, add_device_arguments
from utils.device import prepare_device
from utils.distributed import finish_world, init_world
from utils.errors import UserError, run_cli
from utils.io import ensure_writable_dir
from utils.logs import setup_logging

log = logging.getLogger("test_mf_2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the clip's yaml config (DATASET.PATH etc.)")
    parser.add_argument("--load", required=True, help="STM checkpoint to propagate with")
    parser.add_argument("--save", required=True, help="output folder for the result folders")
    add_propagation_arguments(parser)
    add_device_arguments(parser)
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    options = PropagationOptions.from_args(args)  # checks the flags before anything is read
    cfg = load_config(args.cfg, args.opts)
    clip = open_clip(cfg)
    save = Path(args.save)
    if save.resolve() == clip.path.resolve() or clip.path.resolve() in save.resolve().parents:
        raise UserError(f"--save {save} is inside the clip folder {clip.path}; write results somewhere else")
    ensure_writable_dir(save, "--save")
    world, device = init_world(args.device, args.gpu)
    prepare_device(device, cfg.SYSTEM)
    try:
        run = run_clip(clip, save, options, device, checkpoint=Path(args.load), fuse=False, world=world)
    finally:
        finish_world()
    if world.is_main:
        log.info(
            "done: %s (fuse with: python ensemble.py --predroot %s --dataroot %s)", run.result.path, save,
            clip.path.parent,
        )  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
