"""Reading predicted and ground-truth trimaps for evaluation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, TRIMAP_SUFFIX, read_image, stems_with
from dataset.trimap import alpha_to_trimap, decode_trimap
from evaluation.metrics import TrimapScores, score_sequence
from utils.errors import UserError


def read_labels(path: Path) -> np.ndarray:
    """A trimap file (0 bg, 255 fg, else unknown) as labels 0/1/2."""
    return decode_trimap(read_image(path, cv2.IMREAD_GRAYSCALE))


def read_truth(gt_dir: Path, stem: str, kind: str, width: int) -> np.ndarray:
    if kind == "trimap":
        return read_labels(gt_dir / f"{stem}{TRIMAP_SUFFIX}")
    alpha = read_image(gt_dir / f"{stem}{ALPHA_SUFFIX}", cv2.IMREAD_GRAYSCALE)
    return decode_trimap(alpha_to_trimap(alpha, width))


def detect_gt_kind(gt_dir: Path, kind: str) -> str:
    if kind != "auto":
        return kind
    if stems_with(gt_dir, TRIMAP_SUFFIX):
        return "trimap"
    if stems_with(gt_dir, ALPHA_SUFFIX):
        return "alpha"
    raise UserError(f"--gt {gt_dir} holds neither <stem>{TRIMAP_SUFFIX} nor <stem>{ALPHA_SUFFIX} files")


def evaluate_folders(
    pred_dir: Path, gt_dir: Path, kind: str = "auto", width: int = 10, skip: set[str] | None = None
) -> TrimapScores:
    """Score ``pred_dir/<stem>_trimap.png`` (e.g. an ensemble/ folder) against the ground truth.

    kind: "trimap" (``<stem>_trimap.png``), "alpha" (``<stem>_alpha.png``, made a trimap with
    unknown where 0 < alpha < 1 widened by ``width``) or "auto". Frames in ``skip`` (e.g. the
    keyframes, whose trimaps were given) are left out.
    """
    for folder, flag in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder")
    kind = detect_gt_kind(gt_dir, kind)
    every = stems_with(pred_dir, TRIMAP_SUFFIX)
    stems = [s for s in every if s not in (skip or set())]
    if not stems:
        raise UserError(f"--pred {pred_dir} has no <stem>{TRIMAP_SUFFIX} files to evaluate (other than skipped ones)")
    gt_suffix = TRIMAP_SUFFIX if kind == "trimap" else ALPHA_SUFFIX
    missing = [s for s in stems if not (gt_dir / f"{s}{gt_suffix}").exists()]
    if missing:
        raise UserError(f"{gt_dir / (missing[0] + gt_suffix)} is missing ({len(missing)} frames without ground truth)")
    preds, truths = [], []
    for stem in stems:
        pred = read_labels(pred_dir / f"{stem}{TRIMAP_SUFFIX}")
        truth = read_truth(gt_dir, stem, kind, width)
        if pred.shape != truth.shape:
            raise UserError(
                f"{pred_dir / (stem + TRIMAP_SUFFIX)} is {pred.shape[1]}x{pred.shape[0]} but its ground truth is "
                f"{truth.shape[1]}x{truth.shape[0]}"
            )
        preds.append(pred)
        truths.append(truth)
    position = {stem: i for i, stem in enumerate(every)}
    return score_sequence(preds, truths, stems, [position[s] for s in stems])
