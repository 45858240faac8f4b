"""``tgm.py tune CLIP``: which propagation path is fastest for this clip on this machine while its labels
stay within 99.9% of the fp32 default's, measured on the clip's own frames (``pipeline/tune.py``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from config import load_config
from dataset.clip import scan_clip
from inference.options import PropagationOptions, add_propagation_arguments
from pipeline.tune import keep, path_flags, tune_clip
from utils.cli import add_device_arguments
from utils.distributed import world_on_device
from utils.errors import UserError
from utils.io import atomic_write_json, ensure_writable_dir

NAME = "tune"
HELP = (
    "Time the propagation paths on a clip's own frames (the default, --fast, the precisions this device "
    "computes natively, --compile on long clips, the query batch on a GPU) and choose the fastest whose labels "
    "agree with fp32's on at least 99.9% of pixels."
)
log = logging.getLogger("tune")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", help="a clip folder (<stem>_rgb.png frames, <stem>_trimap.png keyframes) or a video "
                        "(its keyframes in <video stem>_trimaps/)")  # fmt: skip
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--load", default=None, help="the checkpoint the run will propagate with")
    weights.add_argument("--cfg", default=None, help="a yaml whose TRAIN.LOAD_CKPT is the starting checkpoint "
                         "(none: random weights, as a finetuning from scratch starts)")  # fmt: skip
    parser.add_argument("--save", default=None, help="keep the measurement under SAVE/tune/ and reuse it when the "
                        "machine, device, frame size, checkpoint, flags and the clip's length in visits are the "
                        "same")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the choice and every row to OUT")
    parser.add_argument("--visits", type=int, default=3, help="timed segment visits per path (after the warm-up)")
    parser.add_argument("--remeasure", action="store_true", help="measure even when --save holds a measurement")
    add_propagation_arguments(parser)
    add_device_arguments(parser)


def guarded_paths(args: argparse.Namespace) -> list:
    clip = Path(args.clip)
    return [(Path(args.save) if args.save else None, "--save", clip, "CLIP"),
            (Path(args.json) if args.json else None, "--json", clip, "CLIP")]  # fmt: skip


def run(args: argparse.Namespace) -> None:
    options = PropagationOptions.from_args(args)
    if path_flags(options) or options.naive:
        raise UserError(
            "tgm.py tune chooses --fast, --precision, --compile and --query_batch itself: leave them out (the other "
            "flags, e.g. --max_internal_size and --max_memory, are the run's and are kept)"
        )
    if args.visits < 2:
        raise UserError(f"--visits {args.visits}: give at least 2 timed visits")
    cfg = load_config(args.cfg)
    options = options.with_config(cfg.SYSTEM)
    checkpoint = Path(args.load) if args.load else (Path(cfg.TRAIN.LOAD_CKPT) if cfg.TRAIN.LOAD_CKPT else None)
    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist; give the file the run will propagate with")
    if checkpoint is None:
        log.warning(
            "no checkpoint (--load, or TRAIN.LOAD_CKPT in --cfg): timing with RANDOM weights; the labels' agreement "
            "then says little about your finetuned network's: tune again with its checkpoint"
        )
    save = ensure_writable_dir(Path(args.save), "--save") if args.save else None
    clip = scan_clip(Path(args.clip), (), 0, "")
    try:
        with world_on_device(args.device, args.gpu, cfg.SYSTEM) as (world, device):
            if world.distributed:
                raise UserError("tgm.py tune times this machine in one process: run it without torchrun")
            result = tune_clip(clip, checkpoint, options, device, save, args.visits, args.remeasure)
    finally:
        clip.close()
    print(f"{clip.path}: {result.frame_size[1]}x{result.frame_size[0]}, {result.clip_visits} visits to propagate, "
          f"{result.device} ({result.machine}), measured {result.measured}")  # fmt: skip
    print(result.table())
    print(f"choice: {result.summary()}; this clip's propagation about {result.expected_seconds():.0f} s")
    if save is not None:
        log.info("kept in %s", keep(save, result, clip.name))
    if args.json:
        atomic_write_json(Path(args.json), result.as_json())
