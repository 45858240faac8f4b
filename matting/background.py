"""New backgrounds to composite the matted foreground over: a colour, an image or a video."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError

NAMED_COLOURS = {  # RGB
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "gray": (128, 128, 128),
    "green": (0, 177, 64), "blue": (0, 71, 187), "red": (220, 30, 30),
}  # fmt: skip
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass(frozen=True)
class Background:
    """What ``--background`` names: ``kind`` colour (``rgb``), image or video (``path``)."""

    kind: str
    rgb: tuple[int, int, int] = (0, 0, 0)
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Background:
        """A colour name (green, white, ...), ``#rrggbb`` or ``R,G,B``; else an image or video file."""
        spec = text.strip()
        if spec.lower() in NAMED_COLOURS:
            return cls("colour", NAMED_COLOURS[spec.lower()])
        hex_match = re.fullmatch(r"#?([0-9a-fA-F]{6})", spec)
        if hex_match and not Path(spec).exists():
            value = hex_match[1]
            return cls("colour", tuple(int(value[i : i + 2], 16) for i in (0, 2, 4)))
        rgb_match = re.fullmatch(r"(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3})", spec)
        if rgb_match:
            rgb = tuple(int(x) for x in rgb_match.groups())
            if max(rgb) > 255:
                raise UserError(f"--background {text}: colour values go from 0 to 255")
            return cls("colour", rgb)
        path = Path(spec)
        if not path.is_file():
            raise UserError(
                f"--background {text}: not a colour (a name such as green, #00b140 or 0,177,64) nor an existing "
                "image or video file"
            )
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            ok = capture.isOpened() and capture.read()[0]
            capture.release()
            if not ok:
                raise UserError(f"--background {path}: OpenCV cannot read this video; convert it to .mp4 or .avi")
            return cls("video", path=path)
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
            raise UserError(f"--background {path}: not a readable image or video")
        return cls("image", path=path)


class BackgroundFrames:
    """Background images (H x W x 3 float64 RGB in [0, 1]) for frame indices, in one process.

    An image is resized to the frame size; a video gives its frame ``index`` (looping when it is
    shorter than the clip), read forwards without seeking where it can.
    """

    def __init__(self, background: Background, height: int, width: int) -> None:
        self.background, self.size = background, (width, height)
        self._still: np.ndarray | None = None
        self._capture = None
        self._next = 0
        self._count = 0
        if background.kind == "colour":
            self._still = np.broadcast_to(np.array(background.rgb, np.float64) / 255.0, (height, width, 3)).copy()
        elif background.kind == "image":
            self._still = self._prepare(cv2.imread(str(background.path), cv2.IMREAD_COLOR))

    def _prepare(self, bgr: np.ndarray) -> np.ndarray:
        resized = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0

    def get(self, index: int) -> np.ndarray:
        if self._still is not None:
            return self._still
        if self._capture is None:
            self._capture = cv2.VideoCapture(str(self.background.path))
            self._count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        if self._count:
            index %= self._count
        if index != self._next:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._capture.read()
        if not ok:  # a count that overstated the frames: start over
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
            index = 0
        self._next = index + 1
        return self._prepare(frame)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
