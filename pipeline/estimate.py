"""What a workspace run of a clip will cost, before it starts: seconds and disk, from the clip's length
and size and steps measured on this machine with these settings (``tgm.py workspace --estimate``).

A run is: load the network, finetune (unless a checkpoint is given or the finetuning is reused), propagate
every part (each frame between two keyframes is segmented twice, forward and backward), write each part's
PNGs, and fuse. The finetuning step and the propagation step are timed here with the run's own code (a
warm-up, then the median of a few); writing and reading a part PNG are timed on one; the rest is counted
from the parts plan. A long part's memory makes its late steps dearer: the read is timed again at the
memory size the run's parts reach on average. Query features shared between the two passes of a segment
make a real run's second visits cheaper: the estimate is of the unshared step. Starting Python and torch is
not counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dataset.clip import Clip, check_sizes
from inference.driver import configure_model, load_model, time_visits
from inference.plan import plan_parts
from model.stm import STM
from model.weights import trainable_random_init
from pipeline.clip import open_clip
from pipeline.finetuning import plan_finetuning
from pipeline.tune import keep, path_flags, tune_clip, with_path
from pipeline.workspace import WorkspaceJob, clip_config
from training.loop import time_training_steps
from utils.images import encode_png
from utils.logs import duration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEstimate:
    """Counts from the clip and its parts plan, and the times and sizes measured here."""

    clip: str
    frames: int
    height: int
    width: int
    visits: int  # frames segmented
    part_pngs: int  # PNGs the parts write: every visit and each part's keyframe
    finetune_steps: int  # 0: a checkpoint given, or the finetuning reused
    finetune_detail: str
    setup_seconds: float  # the network loaded and set up
    seconds_per_step: float
    finetune_save_seconds: float  # the checkpoints and optimizer states the finetuning writes
    seconds_per_visit: float
    write_seconds: float  # one part PNG encoded (a writer thread does this while the next frame is computed)
    read_seconds: float  # one part PNG decoded (fusing reads them)
    part_png_bytes: int
    fused_bytes_per_frame: int  # the fused trimap and its overlay
    discard_parts: bool
    finetune_bytes: int = 0  # the finetuning's checkpoints and optimizer states (in --save/train_log/)
    path: list[str] = field(default_factory=list)  # the computation path timed (--tune: the one measured fastest)
    tuned: dict | None = None  # with --tune: the measurement (pipeline/tune.py's JSON)

    @property
    def finetune_seconds(self) -> float:
        return self.finetune_steps * self.seconds_per_step + self.finetune_save_seconds

    @property
    def propagate_seconds(self) -> float:
        # the writer thread keeps up unless encoding a PNG takes longer than computing the next frame
        return self.part_pngs * max(self.seconds_per_visit * self.visits / self.part_pngs, self.write_seconds)

    @property
    def fuse_seconds(self) -> float:
        return self.part_pngs * self.read_seconds + 2 * self.frames * self.write_seconds

    @property
    def seconds(self) -> float:
        return self.setup_seconds + self.finetune_seconds + self.propagate_seconds + self.fuse_seconds

    @property
    def disk_bytes(self) -> int:
        """What the run leaves in --save: the result folder (parts are deleted as they are fused with
        --discard_parts) and the finetuning's checkpoints and optimizer states."""
        parts = 0 if self.discard_parts else self.part_pngs * self.part_png_bytes
        return parts + self.frames * self.fused_bytes_per_frame + self.finetune_bytes

    def as_json(self) -> dict:
        return {
            **asdict(self), "finetune_seconds": self.finetune_seconds, "propagate_seconds": self.propagate_seconds,
            "fuse_seconds": self.fuse_seconds, "seconds": self.seconds, "disk_bytes": self.disk_bytes,
        }  # fmt: skip


def estimate_clip(clip_dir: Path, job: WorkspaceJob, device: torch.device) -> RunEstimate:
    """The estimate of ``tgm.py workspace`` on one clip of its workspace, with the job's settings (nothing
    is written: the clip's config is made as the run would make it, in memory)."""
    name, cfg, cfg_path = clip_config(clip_dir, job)
    clip = open_clip(cfg)
    try:
        return _estimate(clip, name, cfg, cfg_path, job, device)
    finally:
        clip.close()


def _estimate(clip: Clip, name: str, cfg, cfg_path: Path, job: WorkspaceJob, device: torch.device) -> RunEstimate:
    options = job.options
    parts = plan_parts(clip.keyframe_indices, len(clip))
    steps, per_step, saving, detail = 0, 0.0, 0.0, f"none: --load {job.checkpoint}" if job.checkpoint else ""
    weights = job.checkpoint  # what the estimate propagates with: the run's checkpoint, or its stand-in
    if job.checkpoint is None:
        plan = plan_finetuning(cfg, cfg_path, clip, job.refine_steps, job.keep_finetuned)
        detail = plan.detail
        if plan.checkpoint is not None:
            weights = plan.checkpoint
        else:
            steps = int(plan.cfg.TRAIN.TOTAL_STEPS)
            weights = Path(plan.cfg.TRAIN.LOAD_CKPT) if plan.cfg.TRAIN.LOAD_CKPT else None
    tuned = None
    if job.tune:  # the path the run would take (it measures again with its finetuned checkpoint)
        tuned = tune_clip(clip, weights, options, device, job.save)
        keep(job.save, tuned, name)
        options = with_path(options, tuned.choice)
    start = time.perf_counter()
    if weights is not None:
        model = load_model(weights, options, device)
    else:
        model = STM()
        trainable_random_init(model)
        model = configure_model(model, options, device)
    setup = time.perf_counter() - start
    if tuned is not None:  # what the chosen path spends once (compiling) is not in the timed steps
        setup += tuned.row(tuned.choice).once_seconds
    finetune_bytes = 0
    if steps:
        log.info("%s: timing finetuning steps (%s crops)", name, tuple(plan.cfg.TRAIN.TRAIN_INPUT_SIZE))
        timing = time_training_steps(plan.cfg, clip, device)
        per_step, saving = timing.seconds_per_step, timing.save_seconds * timing.saves
        finetune_bytes = timing.save_bytes * timing.saves
    log.info("%s: timing propagation steps", name)
    visit = time_visits(model, clip, options, device)
    height, width = check_sizes(clip)
    return RunEstimate(
        clip=name, frames=len(clip), height=height, width=width,
        visits=sum(len(part) - 1 for part in parts), part_pngs=sum(len(part) for part in parts),
        finetune_steps=steps, finetune_detail=detail, setup_seconds=setup, seconds_per_step=per_step,
        finetune_save_seconds=saving, seconds_per_visit=visit.seconds, write_seconds=visit.write_seconds,
        read_seconds=visit.read_seconds, part_png_bytes=visit.png_bytes, fused_bytes_per_frame=fused_png_bytes(clip),
        discard_parts=options.discard_parts, finetune_bytes=finetune_bytes, path=path_flags(options),
        tuned=tuned.as_json() if tuned else None,
    )  # fmt: skip


def fused_png_bytes(clip: Clip) -> int:
    """Bytes of a fused trimap and its overlay for the clip's first keyframe (the overlay is half frame, half
    trimap colours: about a frame's PNG)."""
    keyframe = clip.keyframe_indices[0]
    labels = clip.read_keyframe(keyframe)
    frame = np.ascontiguousarray(clip.read_frame(keyframe)[..., ::-1])
    trimap = np.where(labels == 0, 0, np.where(labels == 2, 255, 128)).astype(np.uint8)
    return len(encode_png(trimap)) + len(encode_png(frame))


def describe(estimate: RunEstimate) -> str:
    """One line for a person."""
    parts = [f"{estimate.clip}: about {duration(estimate.seconds)}"]
    if estimate.finetune_steps:
        parts.append(
            f"finetuning {estimate.finetune_steps} steps x {estimate.seconds_per_step:.2f} s and saving = "
            f"{duration(estimate.finetune_seconds)}"
        )
    parts.append(
        f"propagating {estimate.visits} frame visits x {estimate.seconds_per_visit:.2f} s = "
        f"{duration(estimate.propagate_seconds)} ({estimate.part_pngs} frames written: each part also writes its "
        "keyframe)"
    )
    disk = f"{estimate.disk_bytes / 2**20:.0f} MiB on disk"
    if estimate.finetune_bytes:
        disk += (f" ({estimate.finetune_bytes / 2**20:.0f} MiB of them the finetuning's checkpoints and optimizer "
                 "states; the optimizer states only resume a stopped finetuning and may be deleted after)")  # fmt: skip
    parts.append(disk)
    if estimate.tuned is not None:
        parts.append(f"path measured here: {estimate.tuned['summary']}")
    return ", ".join(parts)
