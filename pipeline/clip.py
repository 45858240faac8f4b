"""One clip from keyframes to fused trimaps: finetune (optional) -> propagate -> ensemble.

``test_mf_2.py``, ``run_workspace.py`` and ``demo.py`` all run this one chain.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from yacs.config import CfgNode

from dataset.clip import Clip, scan_clip
from inference.driver import load_model, propagate_clip
from inference.ensemble import ensemble_folders
from inference.layout import ResultFolder
from inference.options import PropagationOptions
from training.loop import finetune
from utils.distributed import SINGLE, World

log = logging.getLogger(__name__)


def open_clip(cfg: CfgNode) -> Clip:
    """The clip a config names: ``DATASET.PATH``, keyframes ``FINETUNE.GT_IDX`` (or every trimap
    file), keyframe trimaps widened by ``FINETUNE.DILATION``."""
    return scan_clip(cfg.DATASET.PATH, cfg.FINETUNE.GT_IDX, cfg.FINETUNE.DILATION)


@dataclass
class ClipRun:
    """What :func:`run_clip` did: the checkpoint it propagated with, the result folder, seconds."""

    checkpoint: Path
    result: ResultFolder
    finetune_s: float = 0.0
    propagate_s: float = 0.0


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
) -> ClipRun:
    """Finetune on the keyframes (when ``finetuning`` is given), propagate with the result (or
    with ``checkpoint``) into ``save``, and fuse the parts (``fuse``; rank 0 only).

    Exactly one of ``checkpoint`` and ``finetuning`` is given.
    """
    if (checkpoint is None) == (finetuning is None):
        raise ValueError("run_clip needs either a checkpoint or a finetuning, not both")
    finetune_s = 0.0
    if finetuning is not None:
        start = time.perf_counter()
        checkpoint = finetune(finetuning.cfg, finetuning.cfg_path, clip, device, world).checkpoint
        finetune_s = time.perf_counter() - start
    start = time.perf_counter()
    model = load_model(checkpoint, options, device)
    result = propagate_clip(model, clip, save, options, device, world)
    if fuse and world.is_main:
        ensemble_folders([result], clip.path.parent)
    return ClipRun(Path(checkpoint), result, finetune_s, time.perf_counter() - start)
