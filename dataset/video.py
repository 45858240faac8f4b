"""Video files as clips' frames: extracting ``<index>_rgb.png`` frames with the stems results carry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import FRAME_SUFFIX, stems_with
from utils.errors import UserError
from utils.io import atomic_write_png
from utils.logs import progress

log = logging.getLogger(__name__)


def stem_digits(frame_count: int | None) -> int:
    """Digits of the zero-padded frame stems: enough for the last frame index, so that sorted file
    names stay in frame order (at least 5; 8 when the video does not say how long it is)."""
    if not frame_count:
        return 8
    return max(5, len(str(frame_count - 1)))


def frame_stem(index: int, digits: int) -> str:
    """The stem of the video's frame ``index`` (its place in the video, not among the kept frames)."""
    return f"{index:0{digits}d}"


def resize_to_max_edge(frame: np.ndarray, max_edge: int) -> np.ndarray:
    """Downscale (area filter) so that the longer edge is at most ``max_edge``; 0 keeps the size."""
    height, width = frame.shape[:2]
    scale = max_edge / max(height, width) if max_edge else 1.0
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Extraction:
    every: int = 1
    max_edge: int = 0
    start: int = 0
    count: int = 0  # 0: all

    def check(self) -> None:
        if self.every < 1 or self.max_edge < 0 or self.start < 0 or self.count < 0:
            raise UserError("--every must be >= 1 and --max_edge, --start, --count >= 0")


def extract_frames(video: Path, out: Path, settings: Extraction) -> tuple[int, float]:
    """Write every ``settings.every``-th frame of ``video`` as ``out/<index>_rgb.png``; returns
    (frames written, the video's frame rate). Refuses an ``out`` that already holds frames."""
    settings.check()
    if not video.is_file():
        raise UserError(f"{video} does not exist")
    if stems_with(out, FRAME_SUFFIX):
        raise UserError(f"--out {out} already holds frames; extract into a new folder (nothing is overwritten)")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise UserError(f"OpenCV cannot read {video}; convert it to .mp4 (H.264) or .avi first")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    expected = None if total is None else max(0, (total - settings.start + settings.every - 1) // settings.every)
    if settings.count and expected is not None:
        expected = min(expected, settings.count)
    digits = stem_digits(total)
    try:
        with progress(total=expected, desc=f"extract {video.name}", unit="frame") as bar:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index >= settings.start and (index - settings.start) % settings.every == 0:
                    image = resize_to_max_edge(frame, settings.max_edge)
                    atomic_write_png(out / f"{frame_stem(index, digits)}{FRAME_SUFFIX}", image)
                    written += 1
                    bar.update(1)
                    if settings.count and written >= settings.count:
                        break
                index += 1
    finally:
        capture.release()
    if not written:
        raise UserError(f"{video}: no frames read (after --start {settings.start}); is the file complete?")
    return written, fps
