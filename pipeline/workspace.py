"""Every clip of a workspace: finetune, propagate and fuse each (``tgm.py workspace``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from yacs.config import CfgNode

from config import load_config
from dataset.clip import FRAME_SUFFIX, default_trimap_dir, stems_with
from dataset.video import is_video, probe_video
from evaluation.folders import evaluate_folders
from inference.options import PropagationOptions
from inference.uncertainty import read_uncertainty
from pipeline.clip import Finetuning, open_clip, run_clip
from pipeline.finetuning import plan_finetuning, write_record
from pipeline.tune import TuneResult, keep, tune_clip, with_path
from utils.distributed import World
from utils.errors import UserError
from utils.io import atomic_write_text, private_subfolder
from utils.logs import duration

log = logging.getLogger(__name__)


@dataclass
class WorkspaceJob:
    """What tgm.py workspace was asked: the base config and overrides, the memory schedule, an
    optional fixed checkpoint (no finetuning) and ground truth to score against."""

    save: Path
    options: PropagationOptions
    cfg_path: str | None = None
    overrides: tuple[str, ...] = ()
    checkpoint: Path | None = None
    gt_root: Path | None = None
    gt_band_diameter: int = 10
    refine_steps: int = 0
    keep_finetuned: bool = False
    tune: bool = False  # measure each clip's fastest faithful path before propagating it (pipeline/tune.py)


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
    parts: str = ""
    path: str = ""  # with --tune: the path chosen and what it was measured to buy
    suggested: list[str] = field(default_factory=list)


def find_clips(workspace: Path) -> list[Path]:
    """The clips of ``workspace``, sorted: sub-folders holding frames, and videos with a trimap
    folder ``<stem>_trimaps/`` beside them (a folder clip wins over a video of the same name);
    UserError when there are none."""
    if not workspace.is_dir():
        raise UserError(f"--workspace {workspace} is not a folder; pass the folder holding your clip folders")
    visible = [p for p in workspace.iterdir() if not p.name.startswith(".")]
    folders = {p.name: p for p in visible if p.is_dir() and stems_with(p, FRAME_SUFFIX)}
    videos = {p.stem: p for p in sorted(visible) if p.is_file() and is_video(p) and default_trimap_dir(p).is_dir()}
    clips = sorted({**videos, **folders}.items())
    if not clips:
        raise UserError(
            f"--workspace {workspace} holds no clips (sub-folders with <stem>{FRAME_SUFFIX} frames, or videos with "
            "their keyframes in <video stem>_trimaps/)"
        )
    return [path for _, path in clips]


def clip_length(path: Path) -> int:
    """Frames of a workspace clip (a video is probed, not decoded)."""
    return probe_video(path).frame_count if path.is_file() else len(stems_with(path, FRAME_SUFFIX))


def clip_name_of(path: Path) -> str:
    """A workspace clip's name: its folder's name, or its video's stem."""
    return path.stem if path.is_file() else path.name


def clip_config(clip_dir: Path, job: WorkspaceJob) -> tuple[str, CfgNode, Path]:
    """A workspace clip's name, its config (the job's base config and overrides, the clip's path, the
    training runs under ``--save``) and where that config is kept (``--save/configs/<clip>.yaml``)."""
    name = clip_name_of(clip_dir)
    where = ["DATASET.PATH", str(clip_dir.resolve()), "SYSTEM.OUTDIR", str(job.save / "train_log")]
    return name, load_config(job.cfg_path, [*job.overrides, *where]), job.save / "configs" / f"{name}.yaml"


def process_clip(clip_dir: Path, job: WorkspaceJob, world: World, device: torch.device) -> ClipOutcome:
    """Finetune (unless the job has a checkpoint or an unchanged finetuning exists), propagate
    and fuse one clip, redoing only what changed since the last run. Scored when the job has
    ground truth; the suggested frames to annotate next are read back from the result."""
    name, cfg, cfg_path = clip_config(clip_dir, job)
    private_subfolder(job.save, "configs")  # named here: a link planted there must not lead the write elsewhere
    private_subfolder(job.save, "train_log")
    atomic_write_text(cfg_path, cfg.dump())
    clip = open_clip(cfg)
    try:
        return _process(clip, name, cfg, cfg_path, job, world, device)
    finally:
        clip.close()


def _process(clip, name, cfg, cfg_path, job: WorkspaceJob, world: World, device: torch.device) -> ClipOutcome:
    outcome = ClipOutcome(name, len(clip), world.rank, "done")
    checkpoint, finetuning, plan = job.checkpoint, None, None
    if checkpoint is None:
        plan = plan_finetuning(cfg, cfg_path, clip, job.refine_steps, job.keep_finetuned)
        log.info("%s: %s", clip.name, plan.detail)
        checkpoint = plan.checkpoint
        if checkpoint is None:
            finetuning = Finetuning(plan.cfg, plan.cfg_path)  # one clip per rank: no DDP here
    tuned: list[TuneResult] = []

    def tuned_path(weights: Path) -> PropagationOptions:
        result = tune_clip(clip, weights, job.options, device, job.save)
        keep(job.save, result, name)
        tuned.append(result)
        log.info("%s: propagating with %s (measured here): about %s for %d visits", clip.name, result.summary(),
                 duration(result.expected_seconds()), result.clip_visits)  # fmt: skip
        return with_path(job.options, result.choice)

    run = run_clip(clip, job.save, job.options, device, checkpoint=checkpoint, finetuning=finetuning,
                   choose_path=tuned_path if job.tune else None)  # fmt: skip
    if tuned:
        outcome.path = tuned[0].summary()
    if finetuning is not None:
        write_record(cfg, cfg_path, plan.inputs, run.checkpoint)
    outcome.finetune_s, outcome.propagate_s = run.finetune_s, run.propagate_s
    outcome.parts = f"{len(run.computed)} new / {len(run.reused) + len(run.computed)}"
    if run.did_nothing:
        outcome.status, outcome.detail = "skipped", "nothing changed"
    elif plan is not None and finetuning is not None:
        outcome.detail = plan.detail
    if run.result.uncertainty_json.exists():
        outcome.suggested = read_uncertainty(run.result).get("suggested", [])
    if job.gt_root is not None:
        scores = evaluate_folders(
            run.result.ensemble_dir, job.gt_root / name, width=job.gt_band_diameter,
            skip={clip.stems[k] for k in clip.keyframe_indices},
        )  # fmt: skip
        outcome.miou = scores.miou
    return outcome


def summary_table(outcomes: list[ClipOutcome]) -> str:
    """The table tgm.py workspace prints, then each clip's frames to annotate next."""
    head = f"{'clip':<20}{'frames':>7}{'rank':>5}  {'status':<8}{'finetune s':>11}{'propagate s':>12}{'parts':>12}"
    lines = [f"{head}{'mIoU':>7}  detail"]
    for o in outcomes:
        miou = f"{o.miou:.3f}" if o.miou is not None else "-"
        lines.append(
            f"{o.clip:<20}{o.frames:>7}{o.rank:>5}  {o.status:<8}{o.finetune_s:>11.1f}{o.propagate_s:>12.1f}"
            f"{o.parts:>12}{miou:>7}  {o.detail}"
        )
    suggestions = [f"{o.clip}: annotate next: {', '.join(o.suggested)}" for o in outcomes if o.suggested]
    return "\n".join(lines + (["", *suggestions] if suggestions else []))
