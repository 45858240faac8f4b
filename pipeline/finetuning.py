"""Which checkpoint a clip propagates with in a workspace run: a finished finetuning is reused
while what it was trained on is unchanged, and redone (or refined) when that changed.

``<run dir>/inputs.json`` records what a finetuning was computed from: the keyframes (frames and
trimaps by content), the training configuration, the starting weights; and which checkpoint it
left.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode

from dataset.clip import Clip, file_digest
from training.layout import RunFolder
from utils.io import atomic_write_json

log = logging.getLogger(__name__)

# Keys that change how often things are logged or saved, not the weights a finetuning ends with.
# (The keyframes enter by content, so where they are, DATASET.PATH and TRIMAPS, is not an input; nor
# are the propagation's and the frame cache's settings.)
NOT_INPUTS = {
    "PRINT_FREQ", "IMAGE_FREQ", "SAVE_FREQ", "NUM_WORKERS", "OUTDIR", "EXP_SUFFIX", "PATH", "TRIMAPS",
    "MAX_INTERNAL_SIZE", "FRAME_CACHE_MIB", "FRAME_SPILL_MIB",
}  # fmt: skip


def finetuning_inputs(cfg: CfgNode, clip: Clip) -> dict:
    """What a finetuning of ``clip`` with ``cfg`` is computed from, with its fingerprint."""

    def settings(node: CfgNode) -> dict:
        return {k: (settings(v) if isinstance(v, CfgNode) else v) for k, v in node.items() if k not in NOT_INPUTS}

    inputs = {
        "keyframes": [
            [clip.stems[k], clip.frame_digest(k), file_digest(clip.trimap_path(k))] for k in clip.keyframe_indices
        ],
        "config": json.loads(json.dumps(settings(cfg), default=list)),
        "start": file_digest(Path(cfg.TRAIN.LOAD_CKPT)) if cfg.TRAIN.LOAD_CKPT else "random",
    }
    text = json.dumps(inputs, sort_keys=True)
    return {"fingerprint": hashlib.sha256(text.encode()).hexdigest(), **inputs}


@dataclass
class FinetuningPlan:
    """What to do about finetuning: use ``checkpoint`` as it is, or train (from ``cfg``, which
    for a refinement starts from the earlier checkpoint)."""

    checkpoint: Path | None
    cfg: CfgNode | None
    cfg_path: Path | None
    inputs: dict
    detail: str


def plan_finetuning(
    cfg: CfgNode, cfg_path: Path, clip: Clip, refine_steps: int = 0, keep_finetuned: bool = False
) -> FinetuningPlan:
    """Reuse the last finetuning of this clip when its inputs are unchanged; when they changed
    (a keyframe added, redrawn or removed, another config): keep its checkpoint with
    ``keep_finetuned``, continue from it for ``refine_steps`` steps, or train afresh."""
    inputs = finetuning_inputs(cfg, clip)
    previous = read_record(RunFolder.of(cfg, cfg_path))
    earlier = Path(previous["checkpoint"]) if previous else None
    if earlier is None or not earlier.exists():
        return FinetuningPlan(None, cfg, cfg_path, inputs, "finetuned")
    if previous["fingerprint"] == inputs["fingerprint"]:
        return FinetuningPlan(earlier, None, None, inputs, f"finetuning already done ({earlier})")
    if keep_finetuned:
        log.warning("%s: the keyframes or the config changed since %s was trained; --keep_finetuned: using it",
                    clip.name, earlier)  # fmt: skip
        return FinetuningPlan(earlier, None, None, previous, f"kept {earlier.name} (inputs changed)")
    if refine_steps > 0:
        overrides = ["TRAIN.LOAD_CKPT", str(earlier), "TRAIN.LOAD_OPT", "", "TRAIN.TOTAL_STEPS", str(refine_steps),
                     "SYSTEM.EXP_SUFFIX", f"{cfg.SYSTEM.EXP_SUFFIX}_refined"]  # fmt: skip
        refined = cfg.clone()
        refined.defrost()
        refined.merge_from_list(overrides)
        refined.freeze()
        return FinetuningPlan(None, refined, cfg_path, inputs, f"refined {earlier.name} for {refine_steps} steps")
    return FinetuningPlan(None, cfg, cfg_path, inputs, "finetuned afresh (inputs changed)")


def read_record(run_dir: RunFolder) -> dict | None:
    try:
        record = json.loads(run_dir.record.read_text())
        return record if isinstance(record.get("fingerprint"), str) and "checkpoint" in record else None
    except (OSError, ValueError, AttributeError):
        return None


def write_record(cfg: CfgNode, cfg_path: Path, inputs: dict, checkpoint: Path) -> None:
    """Record (in the clip's base run folder) that ``checkpoint`` came from ``inputs``."""
    atomic_write_json(RunFolder.of(cfg, cfg_path).record, {**inputs, "checkpoint": str(checkpoint)}, durable=True)
