"""One clip from keyframes to fused trimaps: finetune (optional) -> propagate -> ensemble.

``test_mf_2.py`` (``tgm.py propagate``), ``tgm.py workspace`` and the demo all run this one chain.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from yacs.config import CfgNode

from dataset.clip import Clip, FrameBudget, scan_clip
from inference.driver import load_model, propagate_clip
from inference.ensemble import ensemble_folders
from inference.layout import ResultFolder
from inference.options import PropagationOptions
from training.loop import finetune
from utils.distributed import SINGLE, World

log = logging.getLogger(__name__)


def open_clip(cfg: CfgNode) -> Clip:
    """The clip a config names: ``DATASET.PATH`` (a folder or a video, whose trimaps are in
    ``DATASET.TRIMAPS``), keyframes ``FINETUNE.GT_IDX`` (or every trimap file), keyframe trimaps
    widened by ``FINETUNE.DILATION``; a video's decoded frames kept as ``SYSTEM.FRAME_*_MIB`` say."""
    budget = FrameBudget(int(cfg.SYSTEM.FRAME_CACHE_MIB), int(cfg.SYSTEM.FRAME_SPILL_MIB))
    return scan_clip(cfg.DATASET.PATH, cfg.FINETUNE.GT_IDX, cfg.FINETUNE.DILATION, cfg.DATASET.TRIMAPS, budget,
                     cfg.DATASET.FRAMES)  # fmt: skip


@dataclass
class ClipRun:
    """What :func:`run_clip` did: the checkpoint it propagated with, the result folder, the parts
    it reused and computed, whether it fused, seconds."""

    checkpoint: Path
    result: ResultFolder
    reused: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    fused: bool = False
    finetune_s: float = 0.0
    propagate_s: float = 0.0

    @property
    def did_nothing(self) -> bool:
        return not self.computed and not self.fused and self.finetune_s == 0.0


@dataclass
class Finetuning:
    """Finetune first: the clip's config and the path it was read from (names the run folder)."""

    cfg: CfgNode
    cfg_path: Path


def run_clip(
    clip: Clip,
    save: Path,
    options: PropagationOptions,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    finetuning: Finetuning | None = None,
    fuse: bool = True,
    world: World = SINGLE,
    choose_path: Callable[[Path], PropagationOptions] | None = None,
) -> ClipRun:
    """Finetune on the keyframes (when ``finetuning`` is given), propagate with the result (or
    with ``checkpoint``) into ``save``, and fuse the parts (``fuse``; rank 0 only). A rerun
    reuses the parts whose inputs did not change and fuses only when the parts changed.
    ``choose_path``: given the checkpoint the clip is propagated with, the options to propagate
    with (``tgm.py workspace --tune`` measures them then).

    Exactly one of ``checkpoint`` and ``finetuning`` is given.
    """
    if (checkpoint is None) == (finetuning is None):
        raise ValueError("run_clip needs either a checkpoint or a finetuning, not both")
    finetune_s = 0.0
    if finetuning is not None:
        start = time.perf_counter()
        checkpoint = finetune(finetuning.cfg, finetuning.cfg_path, clip, device, world).checkpoint
        finetune_s = time.perf_counter() - start
    if choose_path is not None:
        options = choose_path(Path(checkpoint))
    start = time.perf_counter()
    model = load_model(checkpoint, options, device)
    result = ResultFolder.of(save, clip.name, options.mem_every)
    # One hold of the result folder for propagating and fusing (under torchrun propagate_clip takes
    # it on rank 0 itself, so that a refusal reaches every rank, and fusing takes it again).
    with result.lock() if world.is_main and not world.distributed else contextlib.nullcontext():
        propagation = propagate_clip(model, clip, save, options, device, world)
        fused = fuse and world.is_main and not result.is_fused(clip.stems)
        if fused:  # only when the parts changed or the last fusing did not finish
            ensemble_folders([result], clip.path.parent, clip.path)
    run = ClipRun(Path(checkpoint), result, propagation.reused, propagation.computed, fused, finetune_s)
    run.propagate_s = time.perf_counter() - start
    return run
