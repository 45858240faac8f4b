"""``tgm.py finetune`` = ``online_finetune_test.py``: finetune the STM on a clip's keyframes.

Writes SYSTEM.OUTDIR/<cfg stem><EXP_SUFFIX>/: config.yaml, train.log, checkpoint_<n>.pth.tar
(load it with test_mf_2.py --load), optimizer_<n>.pth.tar (resume with TRAIN.LOAD_OPT) and
training_images/. Under ``torchrun --nproc_per_node N`` every rank trains on its own augmentations
with DistributedDataParallel and rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from config import load_config
from dataset.clip import check_sizes
from pipeline.clip import open_clip
from training.loop import finetune
from utils.cli import add_config_arguments, add_device_arguments
from utils.distributed import world_on_device
from utils.errors import UserError

NAME = "finetune"
HELP = "Finetune the STM on a clip's keyframes before propagating (online finetuning)."
log = logging.getLogger("online_finetune_test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="the clip's yaml config (see template.yaml)")
    add_device_arguments(parser)
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.cfg, args.opts)
    clip = open_clip(cfg)
    check_sizes(clip)
    if cfg.SYSTEM.NUM_WORKERS < 0:
        raise UserError(f"SYSTEM.NUM_WORKERS {cfg.SYSTEM.NUM_WORKERS}: must be >= 0")
    with world_on_device(args.device, args.gpu, cfg.SYSTEM) as (world, device):
        try:
            result = finetune(cfg, Path(args.cfg), clip, device, world)
        finally:
            clip.close()
    if world.is_main:
        log.info("checkpoint: %s (propagate with: python test_mf_2.py --cfg %s --load %s --save results)",
                 result.checkpoint, args.cfg, result.checkpoint)  # fmt: skip
