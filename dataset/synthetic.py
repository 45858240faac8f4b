"""Generated sample clips: a moving, deforming, soft-edged textured object over a moving textured
background, with ground truth (alpha and trimap) for every frame.

Used by the demo, the tests and the benchmarks, so that nothing needs to be downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX
from dataset.trimap import alpha_to_trimap
from utils.io import atomic_write_png


def _texture(rng: np.random.Generator, height: int, width: int, colours: np.ndarray, scale: float) -> np.ndarray:
    """Smooth random texture, H x W x 3 float32 in [0, 1], blending a few colours."""
    noise = rng.standard_normal((height // 4 + 2, width // 4 + 2, len(colours))).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), scale)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    if noise.ndim == 2:
        noise = noise[..., None]
    weights = np.exp(3.0 * (noise - noise.mean()) / (noise.std() + 1e-6))
    weights /= weights.sum(axis=2, keepdims=True)
    image = weights @ colours.astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.08 * np.sin(xx * rng.uniform(0.15, 0.4) + yy * rng.uniform(0.05, 0.3))
    return np.clip(image + stripes[..., None], 0.0, 1.0)


@dataclass
class SyntheticClip:
    folder: Path
    gt_folder: Path
    stems: list[str]
    keyframes: list[int]


def render_frames(
    num_frames: int, height: int, width: int, seed: int = 0, grey: bool = False, workers: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (H x W x 3 uint8, RGB) and alpha mattes (H x W float32 in [0, 1]). ``workers``:
    threads rendering frames at once (the same frames whatever the number: only the textures
    are random)."""
    rng = np.random.default_rng(seed)
    margin = max(height, width) // 4
    bg_tex = _texture(
        rng, height + 2 * margin, width + 2 * margin, rng.uniform(0.1, 0.9, (4, 3)), scale=max(1.0, width / 64)
    )
    fg_tex = _texture(rng, height, width, rng.uniform(0.0, 1.0, (3, 3)), scale=max(0.7, width / 128))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    harmonics = rng.uniform(-0.1, 0.1, (4, 2))
    phase = rng.uniform(0, 2 * np.pi, 4)
    base_radius = 0.3 * min(height, width)
    soft = max(1.5, 0.025 * min(height, width))  # edge softness in pixels

    def frame(t: int) -> tuple[np.ndarray, np.ndarray]:
        s = t / max(1, num_frames - 1)
        cx = width * (0.35 + 0.3 * s + 0.05 * np.sin(3 * s))
        cy = height * (0.5 + 0.12 * np.sin(2 * np.pi * s))
        dx, dy = xx - cx, yy - cy
        angle = np.arctan2(dy, dx)
        radius = base_radius * (1 + 0.15 * np.sin(2 * np.pi * s))
        for k in range(4):
            wobble = harmonics[k, 0] * np.cos((k + 2) * angle + phase[k] + 2.0 * s)
            radius = radius * (1 + wobble + harmonics[k, 1] * np.sin((k + 2) * angle + 3.0 * s))
        signed = radius - np.sqrt(dx * dx + dy * dy)  # > 0 inside
        # fuzzy "hair" along part of the boundary: a wider soft band where sin(angle) > 0.3
        fuzz = soft * (1 + 3 * np.clip(np.sin(angle + 2 * s) - 0.3, 0, None))
        alpha = np.clip(0.5 + signed / (2 * fuzz), 0.0, 1.0).astype(np.float32)
        offset_x = round(margin * 0.8 * s)
        offset_y = round(margin * 0.3 * np.sin(np.pi * s))
        background = bg_tex[margin + offset_y : margin + offset_y + height, offset_x : offset_x + width]
        shift = np.float32([[1, 0, 0.15 * width * s], [0, 1, 0.05 * height * np.sin(np.pi * s)]])
        foreground = cv2.warpAffine(fg_tex, shift, (width, height), borderMode=cv2.BORDER_REFLECT)
        image = alpha[..., None] * foreground + (1 - alpha[..., None]) * background
        image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        if grey:
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        return image, alpha

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # NumPy and OpenCV release the GIL on whole arrays
            rendered = list(pool.map(frame, range(num_frames)))
    else:
        rendered = [frame(t) for t in range(num_frames)]
    return [image for image, _ in rendered], [alpha for _, alpha in rendered]


def make_synthetic_clip(
    workspace: Path,
    name: str = "sample",
    num_frames: int = 16,
    size: tuple[int, int] = (72, 100),
    keyframes: Sequence[int] = (0, 9),
    seed: int = 0,
    unknown_width: int = 7,
    grey: bool = False,
    gt_root: Path | None = None,
) -> SyntheticClip:
    """Write a clip folder ``workspace/name`` and its ground truth.

    Args:
        size: (height, width).
        keyframes: frames that get a ``_trimap.png`` in the clip folder.
        unknown_width: dilation of the 0 < alpha < 1 band for the trimaps.
        gt_root: where ``<name>/<stem>_trimap.png`` and ``<stem>_alpha.png`` go for every frame
            (default ``workspace/../<workspace name>_gt``), outside the clip folder.
    """
    height, width = size
    folder = Path(workspace) / name
    folder.mkdir(parents=True, exist_ok=True)
    gt_folder = (Path(gt_root) if gt_root else Path(workspace).parent / f"{Path(workspace).name}_gt") / name
    gt_folder.mkdir(parents=True, exist_ok=True)
    frames, alphas = render_frames(num_frames, height, width, seed, grey)
    stems = [f"{t:05d}" for t in range(num_frames)]
    for t, (frame, alpha) in enumerate(zip(frames, alphas)):
        atomic_write_png(folder / f"{stems[t]}{FRAME_SUFFIX}", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        trimap = alpha_to_trimap(alpha, unknown_width)
        atomic_write_png(gt_folder / f"{stems[t]}{TRIMAP_SUFFIX}", trimap)
        atomic_write_png(gt_folder / f"{stems[t]}{ALPHA_SUFFIX}", np.round(alpha * 255).astype(np.uint8))
        if t in keyframes:
            atomic_write_png(folder / f"{stems[t]}{TRIMAP_SUFFIX}", trimap)
    return SyntheticClip(folder, gt_folder, stems, sorted(keyframes))
