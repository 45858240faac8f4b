"""Turning frames and trimaps into network inputs."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN
from model.stm import IMAGENET_MEAN, IMAGENET_STD

INFERENCE_MULTIPLE = 32
_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def normalise_frame(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H x W x 3 -> float32 H x W x 3, scaled to [0, 1] and ImageNet-normalised.

    The encoders normalise once more: the released weights were trained on this doubly
    normalised input, so it is kept.
    """
    return (rgb.astype(np.float32) / 255.0 - _MEAN) / _STD


def frame_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 H x W x 3 -> 1 x 3 x H x W float32 network input (see normalise_frame)."""
    return torch.from_numpy(np.ascontiguousarray(normalise_frame(rgb).transpose(2, 0, 1))).unsqueeze(0)


def internal_size(height: int, width: int, max_internal_size: int) -> tuple[int, int]:
    """The size a frame is propagated at: its shorter side scaled down to ``max_internal_size``
    (aspect kept, sides rounded; never up; 0: the frame's own size). Like every size, it is then
    reflect-padded to a multiple of 32 for the network (:func:`pad_reflect`)."""
    shorter = min(height, width)
    if not max_internal_size or shorter <= max_internal_size:
        return height, width
    scale = max_internal_size / shorter
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 uint8 frame at ``size`` (h, w): area filter (anti-aliased) when shrinking."""
    if rgb.shape[:2] == size:
        return rgb
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Trimap labels (H x W, 0/1/2) shrunk to ``size`` (h, w) without losing thin unknown bands.

    Each small pixel covers a patch of big ones (area weights): it is background or foreground
    only when all of its patch is, and unknown otherwise, so a one-pixel band stays at least one
    small pixel wide (and widens by less than one small pixel on each side).
    """
    if labels.shape == size:
        return labels
    shrink = functools.partial(cv2.resize, dsize=(size[1], size[0]), interpolation=cv2.INTER_AREA)
    background = shrink((labels == BACKGROUND).astype(np.float32))
    foreground = shrink((labels == FOREGROUND).astype(np.float32))
    small = np.full(size, UNKNOWN, np.uint8)
    small[background > 1 - PURE] = BACKGROUND
    small[foreground > 1 - PURE] = FOREGROUND
    return small


PURE = 1e-4  # how close to 1 a class's share of a patch must be for the patch to be that class


def pad_reflect(x: torch.Tensor, multiple: int = INFERENCE_MULTIPLE) -> torch.Tensor:
    """Reflect-pad the last two dims at the bottom/right up to a multiple (edge not repeated).

    x: ... x H x W. Reflect padding needs the pad to be smaller than the side; a side shorter
    than that is first reflected as far as it goes, repeatedly.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1)
        step_w = min(pad_w, x.shape[-1] - 1)
        if step_h == 0 and step_w == 0:  # a 1-pixel side cannot reflect: repeat it
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x
