"""Reading a clip folder: frames ``<stem>_rgb.png`` in sorted order, keyframes ``<stem>_trimap.png``.

Frames and trimaps are paired by stem (the published finetuning paired them by list position,
which is wrong unless every frame has a trimap).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, decode_trimap
from utils.errors import UserError

FRAME_SUFFIX = "_rgb.png"
TRIMAP_SUFFIX = "_trimap.png"

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """A clip folder: its frames in order and which of them are keyframes.

    stems: frame stems in sorted order; keyframe_indices: sorted indices into ``stems``.
    """

    path: Path
    stems: list[str]
    keyframe_indices: list[int]
    trimap_stems: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self.stems)

    def frame_path(self, index: int) -> Path:
        return self.path / f"{self.stems[index]}{FRAME_SUFFIX}"

    def trimap_path(self, index: int) -> Path:
        return self.path / f"{self.stems[index]}{TRIMAP_SUFFIX}"


def _stems(folder: Path, suffix: str) -> list[str]:
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file())


def scan_clip(path: str | Path, gt_idx: Sequence[int] = ()) -> Clip:
    """Find the frames and keyframes of a clip folder.

    Args:
        path: the clip folder (``DATASET.PATH``).
        gt_idx: keyframe indices into the sorted frames (``FINETUNE.GT_IDX``); empty: every frame
            that has a ``<stem>_trimap.png``.
    Raises UserError for a missing folder, no frames, no keyframes or a bad index.
    """
    folder = Path(path)
    if not str(path):
        raise UserError("DATASET.PATH is empty: set it to your clip folder in the yaml or as DATASET.PATH <dir>")
    if not folder.exists():
        raise UserError(f"DATASET.PATH {folder} does not exist; set it to your clip folder")
    if not folder.is_dir():
        raise UserError(f"DATASET.PATH {folder} is not a folder; set it to the folder holding the frames")
    stems = _stems(folder, FRAME_SUFFIX)
    if not stems:
        raise UserError(
            f"DATASET.PATH {folder} has no frames: expected files named <stem>{FRAME_SUFFIX} (e.g. 00000{FRAME_SUFFIX})"
        )
    trimap_stems = _stems(folder, TRIMAP_SUFFIX)
    orphans = sorted(set(trimap_stems) - set(stems))
    if orphans:
        raise UserError(
            f"{folder / (orphans[0] + TRIMAP_SUFFIX)} has no matching frame {orphans[0]}{FRAME_SUFFIX}"
            f"{f' ({len(orphans)} such trimaps)' if len(orphans) > 1 else ''}; rename or remove it"
        )
    index_of = {stem: i for i, stem in enumerate(stems)}
    if gt_idx:
        keyframes = list(gt_idx)
        for i in keyframes:
            if not 0 <= i < len(stems):
                raise UserError(
                    f"FINETUNE.GT_IDX names frame {i}, but {folder} has {len(stems)} frames "
                    f"(indices 0..{len(stems) - 1})"
                )
        duplicates = sorted({i for i in keyframes if keyframes.count(i) > 1})
        if duplicates:
            raise UserError(f"FINETUNE.GT_IDX names frame {duplicates[0]} more than once; list each keyframe once")
        for i in keyframes:
            if stems[i] not in trimap_stems:
                raise UserError(
                    f"FINETUNE.GT_IDX names frame {i} ({stems[i]}{FRAME_SUFFIX}), but "
                    f"{folder / (stems[i] + TRIMAP_SUFFIX)} does not exist; draw it or drop {i} from GT_IDX"
                )
        keyframes = sorted(keyframes)
    else:
        keyframes = sorted(index_of[s] for s in trimap_stems)
    if not keyframes:
        raise UserError(
            f"{folder} has no keyframes: add at least one <stem>{TRIMAP_SUFFIX} next to its <stem>{FRAME_SUFFIX}"
        )
    return Clip(folder, stems, keyframes, set(trimap_stems))


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imread that raises a UserError instead of returning None."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, flags) if data is not None and data.size else None
    if image is None:
        raise UserError(f"{path} is missing or not a readable image; re-export it as PNG")
    return image


def read_frame(path: Path) -> np.ndarray:
    """A frame as H x W x 3 uint8 in RGB order.

    Grey frames are expanded to 3 channels, an alpha channel is dropped and 16-bit frames are
    scaled to 8 bits; each conversion is logged once per clip folder.
    """
    image = read_image(path)
    if image.dtype == np.uint16:
        _note_conversion(path, "16-bit frames are scaled to 8 bits")
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UserError(f"{path} has pixel type {image.dtype}; frames must be 8-bit (or 16-bit) PNGs")
    if image.ndim == 2:
        _note_conversion(path, "grey frames are expanded to RGB")
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        _note_conversion(path, "RGBA frames are read without their alpha channel")
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_noted: set[tuple[Path, str]] = set()


def _note_conversion(path: Path, what: str) -> None:
    key = (path.parent, what)
    if key not in _noted:
        _noted.add(key)
        log.warning("%s: %s", path.parent, what)


def read_trimap(path: Path, dilation: int = 0) -> np.ndarray:
    """A keyframe trimap as labels H x W uint8 (0/1/2); read as grey, see ``decode_trimap``."""
    image = read_image(path, cv2.IMREAD_GRAYSCALE)
    return decode_trimap(image, dilation)


def trimap_warnings(labels: np.ndarray) -> list[str]:
    """What is missing from a keyframe trimap that propagation or finetuning needs."""
    missing = []
    if not (labels == FOREGROUND).any():
        missing.append("no foreground (255) pixels")
    if not (labels == UNKNOWN).any():
        missing.append("no unknown (grey) pixels")
    if not (labels == BACKGROUND).any():
        missing.append("no background (0) pixels")
    return missing


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG header without decoding; None if the file is not a PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    return height, width


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header when it is a PNG."""
    size = png_size(path)
    if size is None:
        size = read_image(path).shape[:2]
    return size


def check_sizes(clip: Clip) -> tuple[int, int]:
    """All frames share one size and every keyframe trimap has its frame's size.

    Returns (height, width); raises UserError naming the first file that differs.
    """
    first = clip.frame_path(0)
    size = image_size(first)
    for index in range(1, len(clip)):
        other = image_size(clip.frame_path(index))
        if other != size:
            raise UserError(
                f"{clip.frame_path(index)} is {other[1]}x{other[0]} but {first.name} is {size[1]}x{size[0]}; "
                "all frames of a clip must have one size (resize them alike)"
            )
    for index in clip.keyframe_indices:
        other = image_size(clip.trimap_path(index))
        if other != size:
            raise UserError(
                f"{clip.trimap_path(index)} is {other[1]}x{other[0]} but its frame is {size[1]}x{size[0]}; "
                "a trimap must have the size of its frame"
            )
    return size
