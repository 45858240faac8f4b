"""``tgm.py workspace``: finetune, propagate and fuse every clip of a workspace; resumable; shares clips among ranks.

usage: tgm.py workspace --workspace WS --save RESULTS [--cfg base.yaml] [--load CKPT]
                            [--mem_every 5] [--max_memory M] [--gt GT_ROOT] [--device D] [KEY VALUE ...]
       torchrun --nproc_per_node N tgm.py workspace ...   (clips shared out among the ranks)

Every sub-folder of WS holding <stem>_rgb.png frames is a clip (keyframes: its <stem>_trimap.png
files), and so is every video in WS with a <video stem>_trimaps/ folder beside it. Per clip,
written under RESULTS: configs/<clip>.yaml, train_log/<clip>/ (finetuning), <clip>_mem<N>/
(parts, conf.json, ensemble/, envis/, uncertainty.*). --load CKPT propagates with one checkpoint
instead of finetuning. --gt GT_ROOT (GT_ROOT/<clip>/<stem>_trimap.png or _alpha.png) adds the
scores of every clip to the summary.

Reruns redo only what changed, so an interrupted run continues and the correction loop is one
command: run it, add a trimap for a suggested frame, run it again. A finetuning whose keyframes,
config and starting weights are unchanged is reused (when they changed, --refine_steps N
continues the last one for N steps and --keep_finetuned keeps it), and only the parts whose
inputs changed are propagated again.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from config import load_config
from inference.options import PropagationOptions, add_propagation_arguments
from pipeline.estimate import describe, estimate_clip
from pipeline.tune import path_flags
from pipeline.workspace import (
    ClipOutcome,
    WorkspaceJob,
    clip_length,
    clip_name_of,
    find_clips,
    process_clip,
    summary_table,
)  # fmt: skip
from utils.cli import add_config_arguments, add_device_arguments, add_renamed
from utils.distributed import gather, share_by_load, world_on_device
from utils.errors import UserError
from utils.io import atomic_write_json, ensure_writable_dir

NAME = "workspace"
HELP = "Finetune, propagate and fuse every clip of a workspace; resumable; shares clips among ranks."
log = logging.getLogger("workspace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="folder of clip folders and/or videos with <stem>_trimaps/")
    parser.add_argument("--save", required=True, help="where configs, finetuning runs and results go")
    parser.add_argument("--cfg", default=None, help="base yaml for every clip (DATASET.PATH is set per clip)")
    parser.add_argument("--load", default=None, help="propagate with this checkpoint; no finetuning")
    parser.add_argument("--clips", nargs="+", default=None, help="only these clips (folder names, or video stems)")
    parser.add_argument(
        "--refine_steps", type=int, default=0, help="when a clip's keyframes changed since its finetuning, "
        "continue from that checkpoint for N steps instead of finetuning afresh",
    )  # fmt: skip
    parser.add_argument(
        "--keep_finetuned", action="store_true", help="when a clip's keyframes changed, keep propagating with its "
        "finetuned checkpoint: only the parts touching the changed keyframes are recomputed",
    )  # fmt: skip
    add_propagation_arguments(parser)
    parser.add_argument(
        "--tune", action="store_true", help="before propagating a clip, measure which path is fastest for it here with "
        "labels within 99.9%% of fp32's (tgm.py tune, with the checkpoint it propagates with; kept in --save/tune/) "
        "and propagate with that; --fast, --precision, --compile and --query_batch are then its choice",
    )  # fmt: skip
    parser.add_argument("--gt", default=None, help="ground truth root: GT/<clip>/<stem>_trimap.png or _alpha.png")
    parser.add_argument(
        "--gt_band_diameter",
        type=int,
        default=10,
        help="alpha ground truth: unknown band widened by a kernel this many px across",
    )
    add_renamed(parser, "--gt_width", "--gt_band_diameter", "gt_band_diameter", type=int)
    parser.add_argument(
        "--estimate", default=None, metavar="JSON", help="do not run: time a few finetuning and propagation steps "
        "here with these settings, print what the run would take (time, disk) and write it to this JSON file",
    )  # fmt: skip
    add_device_arguments(parser)
    add_config_arguments(parser)


def guarded_paths(args: argparse.Namespace) -> list:
    return [
        (Path(args.save), "--save", Path(args.workspace), "--workspace"),
        (Path(args.estimate) if args.estimate else None, "--estimate", Path(args.workspace), "--workspace"),
    ]


def run(args: argparse.Namespace) -> None:
    options = PropagationOptions.from_args(args)  # checks the flags before any work
    clips = find_clips(Path(args.workspace))
    if args.clips:
        unknown = sorted(set(args.clips) - {clip_name_of(c) for c in clips})
        if unknown:
            raise UserError(f"--clips {unknown[0]}: no such clip folder with frames in {args.workspace}")
        clips = [c for c in clips if clip_name_of(c) in args.clips]
    if args.refine_steps < 0:
        raise UserError(f"--refine_steps {args.refine_steps}: must be >= 0")
    if args.tune and (path_flags(options) or options.naive):
        raise UserError(f"--tune chooses the path itself: leave out {' '.join(path_flags(options)) or '--naive'}")
    save = ensure_writable_dir(Path(args.save), "--save")
    base = load_config(args.cfg, args.opts)  # a bad base config fails here, once, before any work
    options = options.with_config(base.SYSTEM)
    job = WorkspaceJob(
        save, options, args.cfg, tuple(args.opts), Path(args.load) if args.load else None,
        Path(args.gt) if args.gt else None, args.gt_band_diameter, args.refine_steps, args.keep_finetuned, args.tune,
    )  # fmt: skip
    if args.estimate:
        estimate_clips(clips, job, args)
        return
    with world_on_device(args.device, args.gpu, base.SYSTEM) as (world, device):
        loads = [clip_length(c) for c in clips]
        outcomes = []
        for index in share_by_load(loads, world.size)[world.rank]:
            try:
                outcomes.append(process_clip(clips[index], job, world, device))
            except Exception as exc:  # one clip's failure must not stop the others, nor leave ranks waiting
                if isinstance(exc, UserError):
                    log.error("%s: %s", clip_name_of(clips[index]), exc)
                else:
                    log.exception("%s: unexpected failure", clip_name_of(clips[index]))
                outcomes.append(ClipOutcome(clip_name_of(clips[index]), loads[index], world.rank, "failed", str(exc)))
            log.info("%s: %s", clip_name_of(clips[index]), outcomes[-1].status)
        everything = sorted((o for mine in gather(world, outcomes) for o in mine), key=lambda o: o.clip)
    if world.is_main:
        print(summary_table(everything))
        atomic_write_json(save / "summary.json", [asdict(o) for o in everything])
        log.info("summary: %s", save / "summary.json")
    failed = [o for o in everything if o.status == "failed"]
    if failed:
        reasons = "; ".join(f"{o.clip}: {o.detail}" for o in failed[:3])
        raise UserError(f"{len(failed)} clip(s) failed: {reasons}{'; ...' if len(failed) > 3 else ''}; fix and rerun")


def estimate_clips(clips: list[Path], job: WorkspaceJob, args: argparse.Namespace) -> None:
    """--estimate: the cost of each clip's run, measured here, printed and written as JSON (one process)."""
    base = load_config(args.cfg, args.opts)
    estimates = {}
    with world_on_device(args.device, args.gpu, base.SYSTEM) as (world, device):
        if world.distributed:
            raise UserError("--estimate times this machine's steps in one process: run it without torchrun")
        for clip in clips:
            estimate = estimate_clip(clip, job, device)
            print(describe(estimate))
            estimates[estimate.clip] = estimate.as_json()
    Path(args.estimate).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.estimate), estimates)
