"""Trimaps: grey values <-> class labels <-> one-hot / probability images.

Labels: 0 background, 1 unknown, 2 foreground. On disk a user trimap is grey with 0 background,
255 foreground and anything else unknown; an ensembled trimap is written as 0 / 128 / 255.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.images import read_image

BACKGROUND, UNKNOWN, FOREGROUND = 0, 1, 2
LABEL_GREY = np.array([0, 128, 255], dtype=np.uint8)


def decode_trimap(grey: np.ndarray, dilation: int = 0) -> np.ndarray:
    """Grey trimap (H x W uint8) -> labels (H x W uint8, 0/1/2).

    ``v == 0`` background, ``v == 255`` foreground, anything else unknown. ``dilation = d > 0``
    first widens the unknown band with an elliptical d x d structuring element.
    """
    labels = np.full(grey.shape, UNKNOWN, dtype=np.uint8)
    labels[grey == 0] = BACKGROUND
    labels[grey == 255] = FOREGROUND
    if dilation > 0:
        labels = dilate_unknown(labels, dilation)
    return labels


def read_trimap(path: Path, dilation: int = 0) -> np.ndarray:
    """A keyframe trimap file as labels H x W uint8 (0/1/2); read as grey, see ``decode_trimap``."""
    return decode_trimap(read_image(path, cv2.IMREAD_GRAYSCALE), dilation)


def dilate_unknown(labels: np.ndarray, dilation: int) -> np.ndarray:
    """Widen the unknown band of a label map with an elliptical ``dilation x dilation`` kernel."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilation, dilation))
    unknown = cv2.dilate((labels == UNKNOWN).astype(np.uint8), kernel, iterations=1)
    out = labels.copy()
    out[unknown > 0] = UNKNOWN
    return out


def encode_labels(labels: np.ndarray) -> np.ndarray:
    """Labels (0/1/2) -> grey trimap (0/128/255), as ``ensemble.py`` writes it."""
    return LABEL_GREY[labels]


def labels_to_onehot(labels: np.ndarray) -> np.ndarray:
    """Labels H x W -> one-hot 3 x H x W float32 ([bg, unknown, fg])."""
    return (labels[None] == np.arange(3, dtype=labels.dtype)[:, None, None]).astype(np.float32)


def probs_to_png(probs: np.ndarray) -> np.ndarray:
    """Probabilities H x W x 3 [bg, unknown, fg] in [0, 1] -> ``uint8(floor(P * 255))``."""
    return np.floor(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)


def alpha_to_trimap(alpha: np.ndarray, width: int) -> np.ndarray:
    """Ground-truth trimap (0/128/255) from an alpha matte in [0, 1] (float) or 0..255 (uint8).

    The published rule: unknown where 0 < alpha < 1, widened by ``width`` (see dilate_unknown);
    foreground where alpha is 1, background where it is 0.
    """
    full = 255 if alpha.dtype == np.uint8 else 1.0
    labels = np.full(alpha.shape, UNKNOWN, dtype=np.uint8)
    labels[alpha <= 0] = BACKGROUND
    labels[alpha >= full] = FOREGROUND
    if width > 0:
        labels = dilate_unknown(labels, width)
    return encode_labels(labels)


def mask_to_trimap(mask: np.ndarray, fg_width: int, bg_width: int | None = None) -> np.ndarray:
    """Labels (0/1/2) from a binary mask (H x W bool, True = foreground) with an unknown band
    along the mask's edge.

    A foreground pixel is unknown when a background pixel lies within ``fg_width`` pixels of it
    (Euclidean distance between pixel centres), a background pixel when a foreground pixel lies
    within ``bg_width`` (default: ``fg_width``). So a width of W marks W pixels on each side of the
    edge; 0 leaves that side as it is. A mask without both classes has no edge and no band.
    """
    bg_width = fg_width if bg_width is None else bg_width
    labels = np.where(mask, FOREGROUND, BACKGROUND).astype(np.uint8)
    if mask.all() or not mask.any():
        return labels
    # distanceTransform: distance of every non-zero pixel to the nearest zero pixel
    to_background = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_foreground = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    labels[mask & (to_background <= fg_width)] = UNKNOWN
    labels[~mask & (to_foreground <= bg_width)] = UNKNOWN
    return labels


def snap_trimap(grey: np.ndarray) -> np.ndarray:
    """Labels (0/1/2) of a hand-drawn grey trimap: every value goes to the nearest of 0 / 128 / 255
    (anti-aliased brush edges, JPEG noise). Unlike :func:`decode_trimap`, 3 is background and 252
    foreground."""
    levels = LABEL_GREY.astype(np.int16)
    return np.abs(grey.astype(np.int16)[..., None] - levels).argmin(axis=-1).astype(np.uint8)
