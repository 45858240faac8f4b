"""Turning frames and trimaps into network inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
