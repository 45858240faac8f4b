"""The VideoMatting108 dataset as clip folders, keyframe trimaps and ground truth.

VideoMatting108 holds FG_done/<video>/<frame>.png (RGBA: foreground and its alpha matte),
BG_done/<background>/<frame>.jpg, frame_corr.json (FG frame -> BG frame) and
<split>_videos.txt (one video per line; *_subset.txt for the subset). Each frame is composited
(fg * alpha + bg * (1 - alpha)); the ground truth keeps the alpha and its trimap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX, stems_with
from dataset.trimap import alpha_to_trimap
from utils.errors import UserError
from utils.images import read_image
from utils.io import atomic_write_png
from utils.logs import progress

FG_FOLDER, BG_FOLDER = "FG_done", "BG_done"
BAND_PRESETS = {"narrow": 5, "medium": 12, "wide": 20}  # kernel diameters of TCVOM's evaluation


def band_diameter(text: str) -> int:
    """A preset (narrow, medium, wide) or a number of pixels -> the band's kernel diameter."""
    if text in BAND_PRESETS:
        return BAND_PRESETS[text]
    try:
        width = int(text)
    except ValueError as exc:
        raise UserError(f"--band_diameter {text!r}: use narrow, medium, wide or a number of pixels") from exc
    if width < 0:
        raise UserError(f"--band_diameter {width}: must be >= 0")
    return width


@dataclass(frozen=True)
class Dataset:
    """The dataset's folders and frame correspondence (checked when opened)."""

    root: Path
    frame_corr: dict[str, str]
    listed: list[str]

    @classmethod
    def open(cls, root: Path, split: str, subset: bool) -> Dataset:
        corr_path = root / "frame_corr.json"
        list_path = root / f"{split}_videos{'_subset' if subset else ''}.txt"
        for path in (root / FG_FOLDER, root / BG_FOLDER, corr_path, list_path):
            if not path.exists():
                raise UserError(f"{path} is missing: --root must be the VideoMatting108 folder")
        try:
            frame_corr = json.loads(corr_path.read_text())
        except ValueError as exc:
            raise UserError(f"{corr_path} is not valid JSON ({exc})") from exc
        listed = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        return cls(root, frame_corr, listed)

    def video_frames(self, video: str) -> list[tuple[str, str]]:
        """(FG frame, BG frame) pairs of one video, in frame order."""
        return video_frames(self.frame_corr, video)


def video_frames(frame_corr: dict[str, str], video: str) -> list[tuple[str, str]]:
    """(FG frame, BG frame) pairs of one video, in frame order."""
    return [(fg, frame_corr[fg]) for fg in sorted(frame_corr) if str(PurePosixPath(fg).parent) == video]


def composite(fg_path: Path, bg_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(composited BGR uint8, alpha uint8) of one frame; the background is resized to the fg."""
    fg = read_image(fg_path)
    if fg.ndim != 3 or fg.shape[2] != 4:
        raise UserError(f"{fg_path} is not an RGBA image; VideoMatting108 foregrounds carry their matte as alpha")
    bg = read_image(bg_path, cv2.IMREAD_COLOR)
    if bg.shape[:2] != fg.shape[:2]:
        bg = cv2.resize(bg, (fg.shape[1], fg.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = fg[..., 3:].astype(np.float32) / 255.0
    image = fg[..., :3].astype(np.float32) * alpha + bg.astype(np.float32) * (1.0 - alpha)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), fg[..., 3].copy()


def shrink(image: np.ndarray, max_edge: int) -> np.ndarray:
    """Downscale so that the longer edge is at most ``max_edge`` (0: keep)."""
    height, width = image.shape[:2]
    if not max_edge or max(height, width) <= max_edge:
        return image
    scale = max_edge / max(height, width)
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class ImportSettings:
    split: str
    keyframes: tuple[int, ...] = (0,)
    keyframe_every: int = 0
    band_diameter: int = 12
    max_edge: int = 0
    overwrite: bool = False


def import_video(data: Dataset, out: Path, video: str, settings: ImportSettings) -> int:
    """Write one video's frames, ground truth and keyframe trimaps under ``out``; returns its frame count.

    Raises UserError before writing anything when a keyframe is outside the video, or when the
    clip folder already holds frames and ``settings.overwrite`` is not set.
    """
    pairs = data.video_frames(video)
    clip_dir = out / settings.split / video
    gt_dir = out / f"{settings.split}_gt" / video
    count = len(pairs)
    keyframes = set(range(0, count, settings.keyframe_every)) if settings.keyframe_every else set(settings.keyframes)
    bad = sorted(k for k in keyframes if not 0 <= k < count)
    if bad:
        raise UserError(f"--keyframes {bad[0]} is outside video {video}'s {count} frames")
    if not settings.overwrite and (stems_with(clip_dir, FRAME_SUFFIX) or stems_with(gt_dir, ALPHA_SUFFIX)):
        raise UserError(f"{clip_dir} already holds an import of {video}; pass --overwrite to replace it")
    clip_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for index, (fg_name, bg_name) in enumerate(progress(pairs, desc=video, unit="frame")):
        stem = PurePosixPath(fg_name).stem
        image, alpha = composite(data.root / FG_FOLDER / fg_name, data.root / BG_FOLDER / bg_name)
        image, alpha = shrink(image, settings.max_edge), shrink(alpha, settings.max_edge)
        trimap = alpha_to_trimap(alpha, settings.band_diameter)
        atomic_write_png(clip_dir / f"{stem}{FRAME_SUFFIX}", image)
        atomic_write_png(gt_dir / f"{stem}{ALPHA_SUFFIX}", alpha)
        atomic_write_png(gt_dir / f"{stem}{TRIMAP_SUFFIX}", trimap)
        if index in keyframes:
            atomic_write_png(clip_dir / f"{stem}{TRIMAP_SUFFIX}", trimap)
    return count
