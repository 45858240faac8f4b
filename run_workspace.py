#!/usr/bin/env python3
"""Finetune, propagate and fuse every clip of a workspace; resumable; shares clips among ranks.

usage: run_workspace.py --workspace WS --save RESULTS [--cfg base.yaml] [--load CKPT]
                        [--mem_every 5] [--max_memory M] [--gt GT_ROOT] [--device D] [KEY VALUE ...]
       torchrun --nproc_per_node N run_workspace.py ...   (clips shared out among the ranks)

Every sub-folder of WS holding <stem>_rgb.png frames is a clip (keyframes: its <stem>_trimap.png
files). Per clip, written under RESULTS: configs/<clip>.yaml, train_log/<clip>/ (finetuning),
<clip>_mem<N>/ (parts, conf.json, ensemble/, envis/). A clip whose ensemble is complete is skipped,
so a rerun picks up where an interrupted one stopped. --load CKPT propagates with one checkpoint
instead of finetuning. --gt GT_ROOT (GT_ROOT/<clip>/<stem>_trimap.png or _alpha.png) adds the
scores of every clip to the summary.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from config import load_config
from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, scan_clip
from model.checkpoint import load_checkpoint
from model.stm import STM
from utils.cli import add_config_arguments, add_device_arguments, add_propagation_arguments, propagation_options
from utils.device import prepare_device
from utils.distributed import World, finish_world, gather, init_world, share_by_load
from utils.ensemble import ResultCheck, ensemble_result
from utils.errors import UserError, run_cli
from utils.evaluation import evaluate_folders
from utils.inference import configure_model, propagate_clip, result_dir_name
from utils.io import BackgroundWriter, atomic_write_json, atomic_write_text, ensure_writable_dir
from utils.logs import setup_logging
from utils.train import finetune

log = logging.getLogger("run_workspace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, help="folder of clip folders")
    parser.add_argument("--save", required=True, help="where configs, finetuning runs and results go")
    parser.add_argument("--cfg", default=None, help="base yaml for every clip (DATASET.PATH is set per clip)")
    parser.add_argument("--load", default=None, help="propagate with this checkpoint; no finetuning")
    add_propagation_arguments(parser)
    parser.add_argument("--gt", default=None, help="ground truth root: GT/<clip>/<stem>_trimap.png or _alpha.png")
    parser.add_argument("--gt_width", type=int, default=10, help="alpha ground truth: unknown band dilation")
    add_device_arguments(parser)
    add_config_arguments(parser)
    return parser.parse_args(argv)


@dataclass
class ClipOutcome:
    clip: str
    frames: int
    rank: int
    status: str  # done, skipped, failed
    detail: str = ""
    finetune_s: float = 0.0
    propagate_s: float = 0.0
    miou: float | None = None


def find_clips(workspace: Path) -> list[Path]:
    if not workspace.is_dir():
        raise UserError(f"--workspace {workspace} is not a folder; pass the folder holding your clip folders")
    clips = sorted(p for p in workspace.iterdir() if p.is_dir() and any(p.glob(f"*{FRAME_SUFFIX}")))
    if not clips:
        raise UserError(f"--workspace {workspace} holds no clip folders (sub-folders with <stem>{FRAME_SUFFIX} frames)")
    return clips


def is_complete(result_dir: Path, clip_dir: Path) -> bool:
    """The clip's ensemble holds a trimap for every frame (and the propagation finished)."""
    if not (result_dir / "conf.json").exists():
        return False
    stems = [p.name[: -len(FRAME_SUFFIX)] for p in clip_dir.glob(f"*{FRAME_SUFFIX}")]
    return all((result_dir / "ensemble" / f"{stem}{TRIMAP_SUFFIX}").exists() for stem in stems)


def process_clip(clip_dir: Path, args: argparse.Namespace, save: Path, world: World, device) -> ClipOutcome:
    frames = len(list(clip_dir.glob(f"*{FRAME_SUFFIX}")))
    outcome = ClipOutcome(clip_dir.name, frames, world.rank, "done")
    result_dir = save / result_dir_name(clip_dir.name, args.mem_every)
    if is_complete(result_dir, clip_dir):
        outcome.status, outcome.detail = "skipped", "already complete"
    else:
        configs = ensure_writable_dir(save / "configs", "--save")
        cfg_path = configs / f"{clip_dir.name}.yaml"
        overrides = [*args.opts, "DATASET.PATH", str(clip_dir.resolve()), "SYSTEM.OUTDIR", str(save / "train_log")]
        cfg = load_config(args.cfg, overrides)
        atomic_write_text(cfg_path, cfg.dump())
        clip = scan_clip(cfg.DATASET.PATH, cfg.FINETUNE.GT_IDX)
        options = propagation_options(args, cfg.FINETUNE.DILATION)
        checkpoint = Path(args.load) if args.load else None
        if checkpoint is None:
            checkpoint = save / "train_log" / clip_dir.name / f"checkpoint_{cfg.TRAIN.TOTAL_STEPS}.pth.tar"
            if checkpoint.exists():
                log.info("%s: finetuning already done (%s)", clip_dir.name, checkpoint)
            else:
                start = time.perf_counter()
                checkpoint = finetune(cfg, cfg_path, clip, device).checkpoint  # one clip per rank: no DDP here
                outcome.finetune_s = time.perf_counter() - start
        model = STM()
        load_checkpoint(model, checkpoint)
        configure_model(model, options, device)
        start = time.perf_counter()
        result_dir = propagate_clip(model, clip, save, options, device)
        writer = BackgroundWriter()
        try:
            ensemble_result(ResultCheck(result_dir, clip_dir.parent), writer)
        finally:
            writer.close()
        outcome.propagate_s = time.perf_counter() - start
    if args.gt:
        scores = evaluate_folders(
            result_dir / "ensemble", Path(args.gt) / clip_dir.name, width=args.gt_width,
            skip={p.name[: -len(TRIMAP_SUFFIX)] for p in clip_dir.glob(f"*{TRIMAP_SUFFIX}")},
        )  # fmt: skip
        outcome.miou = scores.miou
    return outcome


def summary_table(outcomes: list[ClipOutcome]) -> str:
    lines = [
        f"{'clip':<24}{'frames':>7}{'rank':>5}  {'status':<8}{'finetune s':>11}{'propagate s':>12}{'mIoU':>7}  detail"
    ]
    for o in outcomes:
        miou = f"{o.miou:.3f}" if o.miou is not None else "-"
        lines.append(
            f"{o.clip:<24}{o.frames:>7}{o.rank:>5}  {o.status:<8}{o.finetune_s:>11.1f}{o.propagate_s:>12.1f}"
            f"{miou:>7}  {o.detail}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    propagation_options(args)  # checks the flags before any work
    clips = find_clips(Path(args.workspace))
    save = ensure_writable_dir(Path(args.save), "--save")
    workspace = Path(args.workspace).resolve()
    if workspace in (save.resolve(), *save.resolve().parents):
        raise UserError(f"--save {save} is inside --workspace {workspace}; write results somewhere else")
    load_config(args.cfg, args.opts)  # a bad base config fails here, once, before any work
    world, device = init_world(args.device, args.gpu)
    prepare_device(device)
    try:
        loads = [len(list(c.glob(f"*{FRAME_SUFFIX}"))) for c in clips]
        mine = share_by_load(loads, world.size)[world.rank]
        outcomes = []
        for index in mine:
            try:
                outcomes.append(process_clip(clips[index], args, save, world, device))
            except Exception as exc:  # one clip's failure must not stop the others, nor leave ranks waiting
                if isinstance(exc, UserError):
                    log.error("%s: %s", clips[index].name, exc)
                else:
                    log.exception("%s: unexpected failure", clips[index].name)
                outcomes.append(ClipOutcome(clips[index].name, loads[index], world.rank, "failed", str(exc)))
            log.info("%s: %s", clips[index].name, outcomes[-1].status)
        everything = sorted(
            (o for rank_outcomes in gather(world, outcomes) for o in rank_outcomes), key=lambda o: o.clip
        )
    finally:
        finish_world()
    if world.is_main:
        print(summary_table(everything))
        atomic_write_json(save / "summary.json", [asdict(o) for o in everything])
        log.info("summary: %s", save / "summary.json")
    failed = [o.clip for o in everything if o.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} clip(s) failed: {', '.join(failed)}; see the messages above, fix, and rerun")


if __name__ == "__main__":
    run_cli(main)
