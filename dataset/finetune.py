"""Training clips for online finetuning, made from a clip's keyframes (docs/method.md, "Online finetuning").

Each sample is a 3-frame clip made from one keyframe by random affine warps, cropped so that
every frame shows enough of the unknown band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.clip import Clip, trimap_warnings
from dataset.prepare import normalise_frame
from dataset.trimap import UNKNOWN
from model.stm import IMAGENET_MEAN
from utils.errors import UserError

IGNORE_LABEL = 255
CLIP_FRAMES = 3
MEAN_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)  # fills pixels warped in from outside


@dataclass(frozen=True)
class WarpRange:
    """Bounds of one random affine warp."""

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 0.1
    centre_jitter: float = 10.0
    translation: float = 0.0


GLOBAL_WARP = WarpRange()
STEP_WARP = WarpRange(translation=20.0)


def random_affine(rng: np.random.Generator, height: int, width: int, bounds: WarpRange) -> np.ndarray:
    """A 3 x 3 affine matrix: rotation, scale and shear about a jittered centre, then a shift."""
    angle = math.radians(rng.uniform(-bounds.rotation_deg, bounds.rotation_deg))
    scale = rng.uniform(*bounds.scale)
    shear = rng.uniform(-bounds.shear, bounds.shear)
    cx = width / 2 + rng.uniform(-bounds.centre_jitter, bounds.centre_jitter)
    cy = height / 2 + rng.uniform(-bounds.centre_jitter, bounds.centre_jitter)
    tx, ty = rng.uniform(-bounds.translation, bounds.translation, 2) if bounds.translation else (0.0, 0.0)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.array([cx, cy]) - linear @ np.array([cx, cy]) + np.array([tx, ty])
    return matrix


def clip_warps(rng: np.random.Generator, height: int, width: int) -> list[np.ndarray]:
    """Three 3 x 3 warps for a training clip.

    A global warp ``G`` is shared by the clip; a step warp ``S`` is applied ``|j - u|`` times to
    frame j (its inverse before position u), where u, the frame the step leaves unwarped, is
    first, middle or last at random. The clip therefore moves smoothly through the keyframe's
    (globally warped) view.
    """
    global_warp = random_affine(rng, height, width, GLOBAL_WARP)
    step = random_affine(rng, height, width, STEP_WARP)
    unwarped = int(rng.integers(CLIP_FRAMES))
    warps = []
    for j in range(CLIP_FRAMES):
        power = j - unwarped
        step_power = np.linalg.matrix_power(step if power >= 0 else np.linalg.inv(step), abs(power))
        warps.append(step_power @ global_warp)
    return warps


def warp_frame(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    return cv2.warpAffine(
        frame, matrix[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=MEAN_COLOUR,
    )  # fmt: skip


def warp_labels(labels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Nearest-neighbour warp of a label map; pixels from outside become IGNORE_LABEL."""
    height, width = labels.shape
    return cv2.warpAffine(
        labels, matrix[:2], (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
        borderValue=IGNORE_LABEL,
    )  # fmt: skip


def find_crop(
    labels: list[np.ndarray], crop_hw: tuple[int, int], min_unknown: int, rng: np.random.Generator, tries: int
) -> tuple[int, int] | None:
    """A (top, left) where every label map has at least ``min_unknown`` unknown pixels, or None."""
    height, width = labels[0].shape
    crop_h, crop_w = crop_hw
    unknown = [(lab == UNKNOWN).astype(np.int32) for lab in labels]
    # summed-area tables make each candidate crop O(1)
    tables = [np.pad(u.cumsum(0).cumsum(1), ((1, 0), (1, 0))) for u in unknown]
    for _ in range(tries):
        top = int(rng.integers(height - crop_h + 1))
        left = int(rng.integers(width - crop_w + 1))
        bottom, right = top + crop_h, left + crop_w
        counts = [t[bottom, right] - t[top, right] - t[bottom, left] + t[top, left] for t in tables]
        if min(counts) >= min_unknown:
            return top, left
    return None


class KeyframeClips(Dataset):
    """Random 3-frame training clips from a clip's keyframes.

    Sample ``i`` is drawn from its own generator seeded by ``(seed, i)``, so a seeded run gives
    the same samples whatever the number of DataLoader workers.

    Each sample: ``frames`` 3 x 3 x h x w float32 (normalised, RGB), ``labels`` 3 x h x w int64
    (0/1/2, IGNORE_LABEL where warped in from outside), ``keyframe`` the keyframe's index.
    """

    def __init__(
        self,
        clip: Clip,
        crop_size_wh: tuple[int, int],
        min_unknown: int = 400,
        length: int = 1000,
        seed: int | None = None,
        warp_tries: int = 20,
        crop_tries: int = 10,
    ) -> None:
        self.clip = clip
        self.crop_hw = (int(crop_size_wh[1]), int(crop_size_wh[0]))
        self.min_unknown = min_unknown
        self.length = length
        self.seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**32))
        self.warp_tries = warp_tries
        self.crop_tries = crop_tries
        self.keyframes = []
        for index in clip.keyframe_indices:
            frame = clip.read_frame(index)
            labels = clip.read_keyframe(index)
            self.keyframes.append((index, frame, labels))
        height, width = self.keyframes[0][2].shape
        if self.crop_hw[0] > height or self.crop_hw[1] > width:
            raise UserError(
                f"TRAIN.TRAIN_INPUT_SIZE ({self.crop_hw[1]}, {self.crop_hw[0]}) (width, height) is larger than the "
                f"frames ({width}x{height}); set it to at most ({width}, {height})"
            )
        for index, _, labels in self.keyframes:
            missing = [m for m in trimap_warnings(labels) if "background" not in m]
            if missing:
                raise UserError(
                    f"keyframe {clip.trimap_path(index)} has {' and '.join(missing)}; finetuning learns from the "
                    "keyframes' foreground and unknown band: fix the trimap or leave this frame out of GT_IDX"
                )
            unknown = int((labels == UNKNOWN).sum())
            if unknown < min_unknown:
                raise UserError(
                    f"keyframe {clip.trimap_path(index)} has {unknown} unknown pixels, but finetuning needs at "
                    f"least {min_unknown} in every crop; widen its unknown band (FINETUNE.DILATION) or lower "
                    "FINETUNE.MIN_UNKNOWN_PIXELS"
                )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        rng = np.random.default_rng([self.seed, i])
        index, frame, labels = self.keyframes[int(rng.integers(len(self.keyframes)))]
        height, width = labels.shape
        for _ in range(self.warp_tries):
            warps = clip_warps(rng, height, width)
            warped_labels = [warp_labels(labels, m) for m in warps]
            corner = find_crop(warped_labels, self.crop_hw, self.min_unknown, rng, self.crop_tries)
            if corner is not None:
                break
        else:
            raise UserError(
                f"keyframe {self.clip.trimap_path(index)}: no {self.crop_hw[1]}x{self.crop_hw[0]} crop of its warped "
                f"views held {self.min_unknown} unknown pixels in all {CLIP_FRAMES} frames after "
                f"{self.warp_tries * self.crop_tries} tries; widen its unknown band (FINETUNE.DILATION), use a "
                "larger TRAIN.TRAIN_INPUT_SIZE or lower FINETUNE.MIN_UNKNOWN_PIXELS"
            )
        top, left = corner
        crop = (slice(top, top + self.crop_hw[0]), slice(left, left + self.crop_hw[1]))
        frames = [normalise_frame(warp_frame(frame, m)[crop]).transpose(2, 0, 1) for m in warps]
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(np.stack(frames))),
            "labels": torch.from_numpy(np.stack([lab[crop] for lab in warped_labels]).astype(np.int64)),
            "keyframe": index,
        }
