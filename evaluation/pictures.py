"""Pictures: contact sheets of predictions against ground truth, overlay videos."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from dataset import video
from dataset.trimap import LABEL_GREY
from utils.images import to_8bit

log = logging.getLogger(__name__)

ERROR_COLOUR = np.array([0, 0, 255], np.uint8)  # BGR red
KEYFRAME_COLOUR = (0, 200, 255)  # BGR amber
UNKNOWN_TINT = (0, 140, 255)  # BGR orange


def label_image(labels: np.ndarray) -> np.ndarray:
    """Labels -> grey BGR image (0/128/255)."""
    return np.repeat(LABEL_GREY[labels][..., None], 3, axis=2)


def trimap_overlay(frame_bgr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The frame with background darkened and the unknown band tinted orange: easy to judge."""
    out = frame_bgr.astype(np.float32)
    out[labels == 0] *= 0.35
    unknown = labels == 1
    out[unknown] = 0.45 * out[unknown] + 0.55 * np.array(UNKNOWN_TINT, np.float32)
    return out.astype(np.uint8)


def error_image(frame_bgr: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The frame, darkened, with wrongly labelled pixels in red."""
    out = (frame_bgr.astype(np.float32) * 0.4).astype(np.uint8)
    out[pred != truth] = ERROR_COLOUR
    return out


def _caption(image: np.ndarray, text: str, colour=(255, 255, 255)) -> np.ndarray:
    bar = np.zeros((18, image.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def contact_sheet(
    frames_bgr: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    names: Sequence[str],
    keyframes: set[str] = frozenset(),
    max_width: int = 320,
    extras: Sequence[tuple[str, Sequence[np.ndarray]]] = (),
) -> np.ndarray:
    """One row per frame: frame | ground truth | prediction | errors (red) | the ``extras``
    (caption, a BGR or grey image per frame: e.g. the alpha matte and a composite), captioned."""
    rows = []
    for i, (frame, truth, pred, name) in enumerate(zip(frames_bgr, truths, preds, names)):
        scale = min(1.0, max_width / frame.shape[1])
        tiles = [frame, label_image(truth), label_image(pred), error_image(frame, pred, truth)]
        tiles += [
            cv2.cvtColor(images[i], cv2.COLOR_GRAY2BGR) if images[i].ndim == 2 else images[i] for _, images in extras
        ]
        if scale < 1.0:
            size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
            tiles = [cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles]
        wrong = float((pred != truth).mean())
        is_key = name in keyframes
        captions = [
            f"frame {name}" + (" (keyframe)" if is_key else ""),
            "ground truth",
            "prediction",
            f"errors {wrong:.1%}",
            *(caption for caption, _ in extras),
        ]
        colour = KEYFRAME_COLOUR if is_key else (255, 255, 255)
        captioned = [_caption(t, c, colour) for t, c in zip(tiles, captions)]
        gap = np.zeros((captioned[0].shape[0], 4, 3), np.uint8)
        rows.append(np.concatenate([x for t in captioned for x in (t, gap)][:-1], axis=1))
        rows.append(np.zeros((4, rows[-1].shape[1], 3), np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def write_video(
    path: Path,
    images: Iterable[np.ndarray],
    fps: float,
    total: int | None = None,
    frame_numbers: Iterable[int] | None = None,
) -> int:
    """Write BGR (or BGRA) frames, a sequence or an iterator, as a video (see dataset.video.write_video:
    the codec follows the file type; alpha is kept in .mov and .mkv)."""
    rgb = (cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB) for image in images)
    return video.write_video(path, rgb, fps, frame_numbers=frame_numbers, total=total)


def over_black(image: np.ndarray) -> np.ndarray:
    """An 8- or 16-bit image as 8-bit BGR; with an alpha channel, composited over black."""
    image = to_8bit(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        return np.round(image[..., :3].astype(np.float32) * alpha).astype(np.uint8)
    return image
