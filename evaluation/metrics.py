"""Trimap quality: per-class IoU, mIoU, pixel accuracy, unknown-band recall, temporal flicker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from dataset.trimap import UNKNOWN

CLASS_NAMES = ("background", "unknown", "foreground")


@dataclass
class TrimapScores:
    """Scores over a sequence of frames (all pixels pooled).

    iou: per class [bg, unknown, fg]; miou: their mean; accuracy: share of pixels labelled right;
    unknown_recall: share of the true unknown band that the prediction marks unknown (matting can
    only recover detail inside the predicted band); flicker: share of pixels, per pair of
    adjacent frames (neighbours in the clip, both scored), whose predicted label changes while
    the true label does not.
    """

    frames: int
    iou: list[float]
    miou: float
    accuracy: float
    unknown_recall: float
    flicker: float
    per_frame_miou: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """3 x 3 confusion counts, rows = truth, columns = prediction."""
    return np.bincount(truth.astype(np.int64).ravel() * 3 + pred.ravel(), minlength=9).reshape(3, 3)


def iou_from_confusion(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU; a class absent from both truth and prediction scores 1."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), 1.0)


def score_sequence(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    names: Sequence[str],
    positions: Sequence[int] | None = None,
) -> TrimapScores:
    """Scores of predicted label maps against true ones (H x W, 0/1/2), frames in clip order.

    positions: each frame's index in the clip (default 0, 1, 2, ...); flicker pairs only frames
    whose positions differ by one, so leaving frames out (the keyframes) never pairs frame 8 with 10.
    """
    positions = list(range(len(preds))) if positions is None else list(positions)
    if not preds:
        raise ValueError("no frames to score")
    total = np.zeros((3, 3), np.int64)
    per_frame = {}
    for name, pred, truth in zip(names, preds, truths):
        counts = confusion(pred, truth)
        total += counts
        per_frame[name] = float(iou_from_confusion(counts).mean())
    iou = iou_from_confusion(total)
    unknown_true = total[UNKNOWN].sum()
    changes = pixels = 0
    for t in range(1, len(preds)):
        if positions[t] - positions[t - 1] != 1:
            continue
        stable = truths[t] == truths[t - 1]
        changes += int(((preds[t] != preds[t - 1]) & stable).sum())
        pixels += preds[t].size
    return TrimapScores(
        frames=len(preds),
        iou=[float(x) for x in iou],
        miou=float(iou.mean()),
        accuracy=float(np.trace(total) / total.sum()),
        unknown_recall=float(total[UNKNOWN, UNKNOWN] / unknown_true) if unknown_true else 1.0,
        flicker=changes / pixels if pixels else 0.0,
        per_frame_miou=per_frame,
    )


def format_table(rows: dict[str, TrimapScores]) -> str:
    """A plain-text table, one row per method."""
    header = f"{'':<22}{'mIoU':>7}{'IoU bg':>8}{'IoU unk':>9}{'IoU fg':>8}{'acc':>7}{'unk rec':>9}{'flicker':>9}"
    lines = [header, "-" * len(header)]
    for name, s in rows.items():
        lines.append(
            f"{name:<22}{s.miou:>7.3f}{s.iou[0]:>8.3f}{s.iou[1]:>9.3f}{s.iou[2]:>8.3f}"
            f"{s.accuracy:>7.3f}{s.unknown_recall:>9.3f}{s.flicker:>9.4f}"
        )
    return "\n".join(lines)
