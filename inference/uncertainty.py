"""Where propagation drifts: a score per frame from its parts' predictions, and the frames to
annotate next (``uncertainty.json`` and ``uncertainty.png`` in a result folder).

Every frame between two keyframes is predicted twice, forward from the earlier keyframe and
backward from the later one, and the ensemble averages the two with weights that trust the pass
that started closer (conf.json). The score is the doubt left in that weighted average:

    M = sum_k w_k P_k / sum_k w_k          (P_k: the parts' probability maps, H x W x 3)
    score = 1 - soft mIoU(M, onehot(argmax M))

where the soft IoU of class c is ``sum(min(A_c, B_c)) / sum(max(A_c, B_c))`` over the pixels (a
class present in neither counts as 1), averaged over background, unknown and foreground (so the
small unknown band weighs as much as the large background, as in the mIoU users score trimaps
with). 0 means certain. Where the two passes disagree, M is split between classes and the score
rises; a disagreement of a pass the ensemble hardly trusts (the backward pass right after the
earlier keyframe) counts little. For a frame only one pass covers (before the first keyframe,
after the last), M is that pass and the score is its own doubt: the same measure, one pass.

Why not the plain disagreement of the two passes: near a keyframe the pass from the far keyframe
disagrees most, yet the ensemble follows the near one and is right there. On generated clips the
plain disagreement ranked frames against their true error (Spearman -0.54 over two-pass frames);
the doubt of the weighted mean ranked them with it (docs/correction-loop-and-app.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from inference.layout import Conf, ResultFolder
from utils.io import atomic_write_png, atomic_write_text, read_regular

SUGGESTIONS = 5
UNIFORM_SPREAD = 0.1  # scores within this share of their mean everywhere: no frame stands out


def soft_miou_distance(first: np.ndarray, second: np.ndarray) -> float:
    """``1 - soft mIoU`` of two H x W x 3 probability maps (float in [0, 1])."""
    first = first.reshape(-1, first.shape[-1])
    second = second.reshape(-1, second.shape[-1])
    intersection = np.minimum(first, second).sum(axis=0)
    union = np.maximum(first, second).sum(axis=0)
    iou = np.where(union > 0, intersection / np.maximum(union, 1e-12), 1.0)
    return float(1.0 - iou.mean())


def frame_score(pass_probs: Sequence[np.ndarray], weights: Sequence[float]) -> float:
    """The score of a frame from its passes' probability maps (H x W x 3 float, [0, 1]) and their
    ensemble weights (conf.json): the doubt of their weighted mean (see the module docstring)."""
    total = float(sum(weights))
    mean = sum(p * (w / total) for p, w in zip(pass_probs, weights)) if total > 0 else np.mean(pass_probs, axis=0)
    labels = np.eye(mean.shape[-1], dtype=mean.dtype)[mean.argmax(axis=-1)]
    return soft_miou_distance(mean, labels)


def png_to_probs(png: np.ndarray) -> np.ndarray:
    """A part PNG (H x W x 3 uint8, [bg, unknown, fg] as read by OpenCV) -> probabilities."""
    return png.astype(np.float32) / 255.0


def keyframes_of(conf: Conf) -> set[str]:
    """The keyframes of a result: each part starts at one (the first frame it names)."""
    return {next(iter(part)) for part in conf if part}


def suggest(
    scores: dict[str, float], order: Sequence[str], keyframes: Sequence[str], count: int = SUGGESTIONS
) -> list[str]:
    """Frames to annotate next, most useful first.

    A new keyframe helps the frames it brings closer to a keyframe. The use of annotating frame f
    is estimated as ``sum_t score(t) * (1 - d_f(t) / d(t))``: every frame's score, weighted by
    how much closer f would bring it (d: its distance to the nearest keyframe, d_f: the same with
    f a keyframe; f itself counts fully). Frames are chosen greedily, each choice counting as a
    keyframe for the next, and never within ``radius`` frames of an earlier choice (radius = max(1,
    clip length // 10)), so one long drift gives one suggestion, not its five neighbours.
    order: every stem of the clip in frame order; keyframes: the keyframe stems.
    """
    position = {stem: i for i, stem in enumerate(order)}
    stems = [s for s in order if s in scores]
    if not stems:
        return []
    frames = np.array([position[s] for s in stems], dtype=np.float64)
    values = np.array([scores[s] for s in stems], dtype=np.float64)
    anchors = [position[k] for k in keyframes if k in position]
    nearest = (
        np.min(np.abs(frames[:, None] - np.array(anchors, np.float64)[None]), axis=1)
        if anchors
        else np.full(len(frames), float(len(order)))
    )
    radius = max(1, len(order) // 10)
    chosen: list[int] = []
    for _ in range(count):
        candidates = [i for i in range(len(stems)) if all(abs(frames[i] - frames[c]) > radius for c in chosen)]
        if not candidates:
            break
        # rows: candidates, columns: frames; the distance each frame would have with the candidate added
        closer = np.minimum(nearest[None, :], np.abs(frames[candidates][:, None] - frames[None, :]))
        gain = (values[None, :] * (1 - closer / np.maximum(nearest[None, :], 1e-9))).sum(axis=1)
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        pick = candidates[best]
        chosen.append(pick)
        nearest = np.minimum(nearest, np.abs(frames - frames[pick]))
    return [stems[i] for i in chosen]


@dataclass
class Uncertainty:
    """Scores of the frames without a keyframe trimap, and the suggestions."""

    frames: dict[str, float]
    suggested: list[str]
    keyframes: list[str]
    order: list[str]

    @property
    def level(self) -> float:
        return float(np.mean(list(self.frames.values()))) if self.frames else 0.0

    @property
    def uniform(self) -> bool:
        """Every frame scores about the same (within UNIFORM_SPREAD of the mean, away from 0): the
        passes doubt as much everywhere, so the suggestions single out no frame that matters more."""
        values = list(self.frames.values())
        return len(values) > 2 and self.level > 0.05 and max(values) - min(values) < UNIFORM_SPREAD * self.level

    def as_json(self) -> dict:
        return {
            "frames": {stem: round(score, 6) for stem, score in self.frames.items()},
            "suggested": self.suggested,
            "keyframes": self.keyframes,
            "level": round(self.level, 6),
            "uniform": self.uniform,
            "measure": "1 - soft mIoU between the weighted mean of the frame's predictions (the ensemble's "
            "weights) and its own labels: how much the passes disagree, or one pass doubts; 0 = certain, "
            "1 = no agreement at all; what matters is where it rises above the clip's own level",
        }


def uncertainty_of(scores: dict[str, float], conf: Conf) -> Uncertainty:
    """From the scores of every frame (keyframes may be among them): drop the keyframes, suggest."""
    keyframes = keyframes_of(conf)
    order = sorted({stem for part in conf for stem in part})
    frames = {stem: scores[stem] for stem in order if stem not in keyframes and stem in scores}
    return Uncertainty(frames, suggest(frames, order, sorted(keyframes)), sorted(keyframes), order)


def write_uncertainty(result: ResultFolder, uncertainty: Uncertainty) -> None:
    atomic_write_text(result.uncertainty_json, json.dumps(uncertainty.as_json(), indent=1))
    atomic_write_png(result.uncertainty_png, plot(uncertainty))


def read_uncertainty(result: ResultFolder, limit: int | None = None) -> dict:
    """The scores a run wrote; with ``limit``, only a regular file of at most that many bytes is read
    (never through a link or from a FIFO: the app reads it on every poll)."""
    if limit is None:
        return json.loads(result.uncertainty_json.read_text())
    return json.loads(read_regular(result.uncertainty_json, "uncertainty.json", limit))


# --- the picture ----------------------------------------------------------------------------------

KEYFRAME_COLOUR = (80, 180, 60)  # BGR green
SUGGESTED_COLOUR = (40, 40, 230)  # BGR red
LINE_COLOUR = (200, 120, 30)  # BGR blue


def plot(uncertainty: Uncertainty, height: int = 220) -> np.ndarray:
    """The score along the clip (BGR uint8): a line over the frames, keyframes as green bars,
    suggested frames as red dots numbered by rank."""
    count = len(uncertainty.order)
    width = int(np.clip(10 * count + 80, 480, 1600))
    left, right, top, bottom = 48, 16, 28, 30
    image = np.full((height, width, 3), 255, np.uint8)
    low, high = 0.0, 1.0  # the score's whole scale: a flat line at 0.8 must not look like a curve

    def x_of(i: int) -> int:
        return left + round(i * (width - left - right) / max(1, count - 1))

    def y_of(score: float) -> int:
        return top + round((high - score) / (high - low) * (height - top - bottom))

    cv2.rectangle(image, (left, top), (width - right, height - bottom), (210, 210, 210), 1)
    for fraction in (0.0, 0.5, 1.0):
        value = low + fraction * (high - low)
        y = y_of(value)
        cv2.putText(image, f"{value:.1f}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1)
    position = {stem: i for i, stem in enumerate(uncertainty.order)}
    for stem in uncertainty.keyframes:
        x = x_of(position[stem])
        cv2.line(image, (x, top), (x, height - bottom), KEYFRAME_COLOUR, 2)
    points = [
        (x_of(position[s]), y_of(v)) for s, v in sorted(uncertainty.frames.items(), key=lambda kv: position[kv[0]])
    ]
    segment: list[tuple[int, int]] = []
    for stem in uncertainty.order:  # a line through consecutive scored frames, broken at keyframes
        if stem in uncertainty.frames:
            segment.append((x_of(position[stem]), y_of(uncertainty.frames[stem])))
        elif segment:
            cv2.polylines(image, [np.array(segment, np.int32)], False, LINE_COLOUR, 2, cv2.LINE_AA)
            segment = []
    if segment:
        cv2.polylines(image, [np.array(segment, np.int32)], False, LINE_COLOUR, 2, cv2.LINE_AA)
    for x, y in points:
        cv2.circle(image, (x, y), 2, LINE_COLOUR, -1, cv2.LINE_AA)
    for rank, stem in enumerate(uncertainty.suggested, 1):
        x, y = x_of(position[stem]), y_of(uncertainty.frames[stem])
        cv2.circle(image, (x, y), 6, SUGGESTED_COLOUR, -1, cv2.LINE_AA)
        cv2.putText(image, str(rank), (x - 4, y - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.4, SUGGESTED_COLOUR, 1, cv2.LINE_AA)
    first, last = uncertainty.order[0], uncertainty.order[-1]
    cv2.putText(image, first, (left, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1)
    cv2.putText(
        image, last, (width - right - 8 * len(last), height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1
    )
    title = "disagreement per frame, 0 certain to 1 (green: keyframes, red: annotate next)"
    if uncertainty.uniform:
        title = f"every frame about {uncertainty.level:.2f}: uniformly unsure, no frame stands out"
    cv2.putText(image, title, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return image
