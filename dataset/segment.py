"""Masks from a box and strokes (OpenCV's GrabCut) and of people (an optional person segmenter):
the first step to a keyframe trimap in seconds (``tgm.py trimap from-box`` / ``from-person``, the app).

GrabCut runs on the box and a margin around it, at a reduced working size (the longer edge at
most ``WORK_EDGE``, so that a 1080p frame takes well under a second), and its mask is scaled back
smoothly (bilinear, then halved); the
box and the strokes are then applied at full size as hard constraints: nothing outside the box
is foreground, a foreground stroke is foreground, a background stroke background. The trimap's
unknown band comes from ``dataset.trimap.mask_to_trimap``, as for ``from-mask``.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, mask_to_trimap
from utils.errors import UserError

log = logging.getLogger(__name__)

WORK_EDGE = 320  # GrabCut's working size: the longer edge of the region it sees (its time at 1080p: docs/keyframes.md)
ITERATIONS = 8  # on the generated clips of bench/bench_box.py, 5 gave a mIoU about 0.01 lower


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels, ``x0, y0`` included, ``x1, y1`` excluded."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def parse(cls, text: str, width: int, height: int) -> Box:
        """``x0,y0,x1,y1`` clipped to the frame; UserError if it is not four numbers or is empty."""
        try:
            x0, y0, x1, y1 = (round(float(v)) for v in text.split(","))
        except ValueError:
            raise UserError(f"--box {text!r}: give x0,y0,x1,y1 in pixels, e.g. --box 120,40,560,700") from None
        return cls.clipped(x0, y0, x1, y1, width, height)

    @classmethod
    def clipped(cls, x0: int, y0: int, x1: int, y1: int, width: int, height: int) -> Box:
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        box = cls(max(0, x0), max(0, y0), min(width, x1), min(height, y1))
        if box.x1 - box.x0 < 2 or box.y1 - box.y0 < 2:
            raise UserError(
                f"the box {x0},{y0},{x1},{y1} holds less than 2x2 pixels of the {width}x{height} frame; draw it around "
                "the subject"
            )
        return box

    def grown(self, share: float, width: int, height: int) -> Box:
        """The box widened by ``share`` of its size on each side, within the frame."""
        dx, dy = max(8, round(share * (self.x1 - self.x0))), max(8, round(share * (self.y1 - self.y0)))
        return Box(max(0, self.x0 - dx), max(0, self.y0 - dy), min(width, self.x1 + dx), min(height, self.y1 + dy))

    def shifted(self, dx: int, dy: int) -> Box:
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def scaled(self, scale: float) -> Box:
        return Box(int(self.x0 * scale), int(self.y0 * scale), max(int(self.x0 * scale) + 1, round(self.x1 * scale)),
                   max(int(self.y0 * scale) + 1, round(self.y1 * scale)))  # fmt: skip


def grabcut_mask(
    rgb: np.ndarray,
    box: Box | None = None,
    fg_strokes: np.ndarray | None = None,
    bg_strokes: np.ndarray | None = None,
    work_edge: int = WORK_EDGE,
    iterations: int = ITERATIONS,
) -> np.ndarray:
    """The foreground (H x W bool) of ``rgb`` (H x W x 3 uint8) inside ``box`` and/or marked by strokes.

    fg_strokes / bg_strokes: H x W bool, pixels the user marked as sure foreground / background.
    With a box, GrabCut sees only the box and a margin around it (``MARGIN`` of its size: where it
    learns the background's colours); without one, the whole frame, every pixel not stroked
    starting as probable background. UserError when nothing says where the foreground is.
    """
    height, width = rgb.shape[:2]
    fg = np.zeros((height, width), bool) if fg_strokes is None else fg_strokes.astype(bool)
    bg = np.zeros((height, width), bool) if bg_strokes is None else bg_strokes.astype(bool)
    if box is None and not fg.any():
        raise UserError("give a box around the subject or foreground strokes: nothing says where the foreground is")
    region = Box(0, 0, width, height) if box is None else box.grown(MARGIN, width, height)
    if box is not None and fg.any():  # strokes outside the box's region widen it
        ys, xs = np.nonzero(fg)
        region = Box(min(region.x0, xs.min()), min(region.y0, ys.min()), max(region.x1, xs.max() + 1),
                     max(region.y1, ys.max() + 1))  # fmt: skip
    crop = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    mask = np.zeros((height, width), bool)
    mask[crop] = _grabcut_region(rgb[crop], None if box is None else box.shifted(-region.x0, -region.y0),
                                 fg[crop], bg[crop], work_edge, iterations)  # fmt: skip
    if box is not None:
        outside = np.ones((height, width), bool)
        outside[box.y0 : box.y1, box.x0 : box.x1] = False
        mask[outside] = False
    mask[bg] = False
    mask[fg] = True
    return mask


MARGIN = 0.2  # of the box's width and height, on each side: the background GrabCut learns from


def _grabcut_region(
    rgb: np.ndarray, box: Box | None, fg: np.ndarray, bg: np.ndarray, work_edge: int, iterations: int
) -> np.ndarray:
    """GrabCut on one region at the working size; the probable foreground scaled back to the region's size."""
    height, width = rgb.shape[:2]
    scale = min(1.0, work_edge / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    small_fg = _shrink(fg, size) if scale < 1 else fg
    small_bg = _shrink(bg, size) if scale < 1 else bg
    labels = np.full(small.shape[:2], cv2.GC_PR_BGD, np.uint8)
    if box is not None:
        b = box.scaled(scale)
        labels[:] = cv2.GC_BGD
        labels[b.y0 : b.y1, b.x0 : b.x1] = cv2.GC_PR_FGD
    labels[small_bg] = cv2.GC_BGD
    labels[small_fg] = cv2.GC_FGD
    has_foreground = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
    if has_foreground and np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():  # GrabCut needs both to start
        background_model, foreground_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means starts at random: the same inputs give the same trimap
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), labels, None, background_model, foreground_model,
                    iterations, cv2.GC_INIT_WITH_MASK)  # fmt: skip
    probable = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    if scale < 1:
        return cv2.resize(probable, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    return probable > 0.5


def _shrink(strokes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Strokes at the working size: a small pixel is stroked when any of its footprint is (thin strokes stay)."""
    return cv2.resize(strokes.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0


def read_strokes(path: Path | None, height: int, width: int, flag: str) -> np.ndarray | None:
    """A strokes image (white or any non-black pixel = stroked; alpha, when present, marks them)."""
    if path is None:
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{flag} {path} is not an image OpenCV can read (give a PNG, white strokes on black)")
    if image.shape[:2] != (height, width):
        raise UserError(
            f"{flag} {path} is {image.shape[1]}x{image.shape[0]} but the frame is {width}x{height}; draw the strokes "
            "on an image of the frame's size"
        )
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., 3] > 0
    return (image if image.ndim == 2 else image.max(axis=2)) > 0


# --- people, with the optional person segmenter ------------------------------------------------

PERSON_EXTRA = (
    "the person tool needs the optional extra: pip install --no-deps mediapipe==0.10.14 && pip install "
    "ai-edge-litert (the model is the selfie segmenter inside the mediapipe wheel, Apache-2.0; nothing is "
    "downloaded at run time)"
)
PERSON_MODEL = ("modules", "selfie_segmentation", "selfie_segmentation_landscape.tflite")


def person_model_path() -> Path:
    """The selfie segmenter's ``.tflite`` inside the installed mediapipe package (found without
    importing mediapipe, whose own dependencies are not needed); UserError saying how to install it."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(PERSON_EXTRA)
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*PERSON_MODEL)
    if not path.is_file():
        raise UserError(f"{path} is missing: this mediapipe has no selfie segmenter; {PERSON_EXTRA}")
    return path


class PersonSegmenter:
    """MediaPipe's selfie segmenter (landscape, 144 x 256 input) on the TFLite runtime of
    ``ai-edge-litert``: the probability that a pixel shows a person."""

    def __init__(self) -> None:
        model = person_model_path()
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserError(PERSON_EXTRA) from None
        self.interpreter = Interpreter(model_path=str(model))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """H x W float32 in [0, 1] for an H x W x 3 uint8 RGB frame."""
        _, in_height, in_width, _ = self.input["shape"]
        small = cv2.resize(rgb, (int(in_width), int(in_height)), interpolation=cv2.INTER_AREA)
        self.interpreter.set_tensor(self.input["index"], (small.astype(np.float32) / 255.0)[None])
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])[0, ..., 0].astype(np.float32)
        return np.clip(cv2.resize(out, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def person_trimap(probability: np.ndarray, band_per_side: int, soft: tuple[float, float] = (0.1, 0.9)) -> np.ndarray:
    """Labels (0/1/2) from a person probability map: the mask ``p > 0.5`` with ``band_per_side``
    pixels of unknown on each side of its edge, and unknown wherever the segmenter is unsure
    (``soft[0] < p < soft[1]``: hair, motion blur)."""
    labels = mask_to_trimap(probability > 0.5, band_per_side)
    labels[(probability > soft[0]) & (probability < soft[1])] = UNKNOWN
    return labels


def box_trimap(
    rgb: np.ndarray,
    box: Box | None,
    band_per_side: int,
    fg_strokes: np.ndarray | None = None,
    bg_strokes: np.ndarray | None = None,
) -> np.ndarray:
    """Labels (0/1/2): :func:`grabcut_mask` with ``band_per_side`` pixels of unknown on each side
    of its edge (the band of ``from-mask``); strokes stay sure after the band is drawn."""
    labels = mask_to_trimap(grabcut_mask(rgb, box, fg_strokes, bg_strokes), band_per_side)
    if bg_strokes is not None:
        labels[bg_strokes.astype(bool)] = BACKGROUND
    if fg_strokes is not None:
        labels[fg_strokes.astype(bool)] = FOREGROUND
    return labels
