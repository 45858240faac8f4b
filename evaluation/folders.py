"""Scoring folders of predicted trimaps or alpha mattes against ground truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX, stems_with
from dataset.trimap import UNKNOWN, alpha_to_trimap, decode_trimap
from evaluation.alpha import AlphaScores, score_alphas
from evaluation.metrics import TrimapScores, score_sequence
from utils.errors import UserError
from utils.images import read_alpha, read_image


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


def clip_positions(predicted: list[str], gt_dir: Path) -> dict[str, int]:
    """Each frame's index in the clip, from every stem the prediction or the ground truth knows of:
    frames left out of the prediction still count, so neighbours are told from gaps."""
    known = set(predicted) | set(stems_with(gt_dir, TRIMAP_SUFFIX)) | set(stems_with(gt_dir, ALPHA_SUFFIX))
    return {stem: i for i, stem in enumerate(sorted(known))}


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
        _check_same_size(pred_dir / f"{stem}{TRIMAP_SUFFIX}", pred, truth)
        preds.append(pred)
        truths.append(truth)
    position = clip_positions(every, gt_dir)
    return score_sequence(preds, truths, stems, [position[s] for s in stems])


def _check_same_size(path: Path, pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise UserError(
            f"{path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth is {truth.shape[1]}x{truth.shape[0]}"
        )


def evaluate_alpha_folders(
    pred_dir: Path, gt_dir: Path, width: int = 10, skip: set[str] | None = None, frames_dir: Path | None = None
) -> AlphaScores:
    """Score ``pred_dir/<stem>_alpha.png`` against ``gt_dir/<stem>_alpha.png`` (alpha metrics,
    see evaluation.alpha), inside the true unknown band (0 < alpha < 1 widened with a ``width``
    px elliptical kernel) and overall. ``frames_dir`` (the clip's ``<stem>_rgb.png``) gives the
    optical flow for MESSDdt; frames in ``skip`` are left out."""
    for folder, flag in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder")
    every = stems_with(pred_dir, ALPHA_SUFFIX)
    stems = [s for s in every if s not in (skip or set())]
    if not stems:
        raise UserError(f"--pred {pred_dir} has no <stem>{ALPHA_SUFFIX} files to evaluate (other than skipped ones)")
    missing = [s for s in stems if not (gt_dir / f"{s}{ALPHA_SUFFIX}").exists()]
    if missing:
        raise UserError(
            f"{gt_dir / (missing[0] + ALPHA_SUFFIX)} is missing ({len(missing)} frames without ground truth)"
        )
    if frames_dir is not None:
        absent = [s for s in stems if not (frames_dir / f"{s}{FRAME_SUFFIX}").exists()]
        if absent:
            raise UserError(f"{frames_dir / (absent[0] + FRAME_SUFFIX)} is missing (--frames)")
    alphas, truths, regions, frames = [], [], [], []
    for stem in stems:
        alpha, truth = read_alpha(pred_dir / f"{stem}{ALPHA_SUFFIX}"), read_alpha(gt_dir / f"{stem}{ALPHA_SUFFIX}")
        _check_same_size(pred_dir / f"{stem}{ALPHA_SUFFIX}", alpha, truth)
        alphas.append(alpha)
        truths.append(truth)
        regions.append(decode_trimap(alpha_to_trimap(truth, width)) == UNKNOWN)
        if frames_dir is not None:
            frames.append(read_image(frames_dir / f"{stem}{FRAME_SUFFIX}", cv2.IMREAD_COLOR))
    position = clip_positions(every, gt_dir)
    return score_alphas(alphas, truths, regions, stems, [position[s] for s in stems], frames or None)
