"""Every clip of a workspace: finetune, propagate and fuse each (``run_workspace.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from config import load_config
from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, stems_with
from evaluation.folders import evaluate_folders
from inference.layout import ResultFolder
from inference.options import PropagationOptions
from pipeline.clip import Finetuning, open_clip, run_clip
from training.loop import checkpoint_path, run_dir_for
from utils.distributed import World
from utils.errors import UserError
from utils.io import atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)


@dataclass
class WorkspaceJob:
    """What run_workspace.py was asked: the base config and overrides, the memory schedule, an
    optional fixed checkpoint (no finetuning) and ground truth to score against."""

    save: Path
    options: PropagationOptions
    cfg_path: str | None = None
    overrides: tuple[str, ...] = ()
    checkpoint: Path | None = None
    gt_root: Path | None = None
    gt_width: int = 10


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
    """Sub-folders of ``workspace`` holding frames, sorted; UserError when there are none."""
    if not workspace.is_dir():
        raise UserError(f"--workspace {workspace} is not a folder; pass the folder holding your clip folders")
    clips = sorted(
        p for p in workspace.iterdir() if not p.name.startswith(".") and p.is_dir() and stems_with(p, FRAME_SUFFIX)
    )
    if not clips:
        raise UserError(f"--workspace {workspace} holds no clip folders (sub-folders with <stem>{FRAME_SUFFIX} frames)")
    return clips


def process_clip(clip_dir: Path, job: WorkspaceJob, world: World, device: torch.device) -> ClipOutcome:
    """Finetune (unless the job has a checkpoint or the finetuning is done), propagate and fuse
    one clip; skipped when its ensemble is complete. Scored when the job has ground truth."""
    stems = stems_with(clip_dir, FRAME_SUFFIX)
    outcome = ClipOutcome(clip_dir.name, len(stems), world.rank, "done")
    result = ResultFolder.of(job.save, clip_dir.name, job.options.mem_every)
    if result.is_fused(stems):
        outcome.status, outcome.detail = "skipped", "already complete"
    else:
        configs = ensure_writable_dir(job.save / "configs", "--save")
        cfg_path = configs / f"{clip_dir.name}.yaml"
        where = ["DATASET.PATH", str(clip_dir.resolve()), "SYSTEM.OUTDIR", str(job.save / "train_log")]
        overrides = [*job.overrides, *where]
        cfg = load_config(job.cfg_path, overrides)
        atomic_write_text(cfg_path, cfg.dump())
        clip = open_clip(cfg)
        checkpoint, finetuning = job.checkpoint, None
        if checkpoint is None:
            finished = checkpoint_path(run_dir_for(cfg, cfg_path), cfg.TRAIN.TOTAL_STEPS)
            if finished.exists():
                log.info("%s: finetuning already done (%s)", clip_dir.name, finished)
                checkpoint = finished
            else:
                finetuning = Finetuning(cfg, cfg_path)  # one clip per rank: no DDP here
        run = run_clip(clip, job.save, job.options, device, checkpoint=checkpoint, finetuning=finetuning)
        outcome.finetune_s, outcome.propagate_s = run.finetune_s, run.propagate_s
    if job.gt_root is not None:
        scores = evaluate_folders(
            result.ensemble_dir, job.gt_root / clip_dir.name, width=job.gt_width,
            skip=set(stems_with(clip_dir, TRIMAP_SUFFIX)),
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
