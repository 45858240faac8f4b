"""``tgm.py propagate`` = ``test_mf_2.py``: propagate a clip's keyframe trimaps to every frame.

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
from utils.distributed import world_on_device
from utils.io import ensure_writable_dir, refuse_inside

NAME = "propagate"
HELP = "Propagate a clip's keyframe trimaps to every frame, forward and backward, part by part."
log = logging.getLogger("test_mf_2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="the clip's yaml config (DATASET.PATH etc.)")
    parser.add_argument("--load", required=True, help="STM checkpoint to propagate with")
    parser.add_argument("--save", required=True, help="output folder for the result folders")
    add_propagation_arguments(parser)
    add_device_arguments(parser)
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> None:
    options = PropagationOptions.from_args(args)  # checks the flags before anything is read
    cfg = load_config(args.cfg, args.opts)
    options = options.with_config(cfg.SYSTEM)
    clip = open_clip(cfg)
    save = Path(args.save)
    refuse_inside(save, "--save", clip.path, "the clip folder")
    ensure_writable_dir(save, "--save")
    with world_on_device(args.device, args.gpu, cfg.SYSTEM) as (world, device):
        try:
            run = run_clip(clip, save, options, device, checkpoint=Path(args.load), fuse=False, world=world)
        finally:
            clip.close()
    if world.is_main and options.discard_parts:
        log.info("done: %s (fused while propagating: %s)", run.result.path, run.result.ensemble_dir)
    elif world.is_main:
        log.info(
            "done: %s (fuse with: python ensemble.py --predroot %s --dataroot %s)", run.result.path, save,
            clip.path.parent,
        )  # fmt: skip
