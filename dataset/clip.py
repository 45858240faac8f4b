"""Clips: frames ``<stem>_rgb.png`` in sorted order and keyframes ``<stem>_trimap.png``, found and checked.

Frames and trimaps are paired by stem (the published finetuning paired them by list position,
which is wrong unless every frame has a trimap). Where a clip's frames come from is a
``FrameSource``: a folder of PNGs today (``FolderFrames``); image files themselves are read by
``utils/images.py``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, read_trimap
from utils.errors import UserError
from utils.images import image_size, png_header, read_image, read_rgb

FRAME_SUFFIX = "_rgb.png"
TRIMAP_SUFFIX = "_trimap.png"
ALPHA_SUFFIX = "_alpha.png"  # ground-truth mattes (evaluation, generated clips, importers)

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    """Where a clip's frames come from, by index into its sorted stems.

    ``read_rgb(i)``: frame i as H x W x 3 uint8, RGB order; ``digest(i)``: a hash of what frame i
    is made of (its file, or its place in a video), for deciding what a rerun must recompute.
    """

    def read_rgb(self, index: int) -> np.ndarray: ...

    def digest(self, index: int) -> str: ...


@dataclass(frozen=True)
class FolderFrames:
    """Frames stored as ``<stem>_rgb.png`` files in one folder."""

    folder: Path
    stems: tuple[str, ...]

    def path(self, index: int) -> Path:
        return self.folder / f"{self.stems[index]}{FRAME_SUFFIX}"

    def read_rgb(self, index: int) -> np.ndarray:
        return read_rgb(self.path(index))

    def digest(self, index: int) -> str:
        return file_digest(self.path(index))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Clip:
    """A clip folder: its frames in order and which of them are keyframes.

    stems: frame stems in sorted order; keyframe_indices: sorted indices into ``stems``;
    dilation: ``FINETUNE.DILATION``, applied whenever a keyframe trimap is read.
    """

    path: Path
    stems: list[str]
    keyframe_indices: list[int]
    trimap_stems: set[str] = field(default_factory=set)
    dilation: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def frames(self) -> FrameSource:
        return FolderFrames(self.path, tuple(self.stems))

    def frame_path(self, index: int) -> Path:
        return self.path / f"{self.stems[index]}{FRAME_SUFFIX}"

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as H x W x 3 uint8, RGB order (see ``utils.images.read_rgb``)."""
        return self.frames.read_rgb(index)

    def trimap_path(self, index: int) -> Path:
        return self.path / f"{self.stems[index]}{TRIMAP_SUFFIX}"

    def read_keyframe(self, index: int) -> np.ndarray:
        """The trimap of keyframe ``index`` as labels (H x W uint8, 0/1/2), dilated as configured."""
        return read_trimap(self.trimap_path(index), self.dilation)


_CLIP_FILE = re.compile(r"(?P<stem>.+)_(?P<kind>rgb|trimap)\.(?P<ext>[A-Za-z0-9]+)", re.IGNORECASE)


def _stems(names: list[str], suffix: str) -> list[str]:
    return sorted(name[: -len(suffix)] for name in names if name.endswith(suffix))


def visible_files(folder: Path) -> list[str]:
    """Names of the files in ``folder``, hidden ones left out (macOS ``._00001_rgb.png``
    resource forks, editors' swap files, our own temporary files)."""
    return [p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]


def stems_with(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of the visible files ``<stem><suffix>`` in ``folder`` (none if it is not a folder)."""
    if not folder.is_dir():
        return []
    return _stems(visible_files(folder), suffix)


def _check_names(folder: Path, names: list[str]) -> None:
    """Files that look like frames or trimaps but would not be read are mistakes: say so."""
    present = set(names)
    for name in sorted(names):
        match = _CLIP_FILE.fullmatch(name)
        if match is None:
            continue
        kind = match["kind"].lower()
        canonical = f"{match['stem']}_{kind}.png"
        if name == canonical:
            continue
        if canonical in present:
            raise UserError(
                f"{folder} has two files for {kind} {match['stem']!r}: {canonical} and {name}; keep one of them"
            )
        raise UserError(
            f"{folder / name} would not be read: frames must be named <stem>{FRAME_SUFFIX} and trimaps "
            f"<stem>{TRIMAP_SUFFIX} (PNG, lower-case suffix); rename or convert it"
        )


def scan_clip(path: str | Path, gt_idx: Sequence[int] = (), dilation: int = 0) -> Clip:
    """Find the frames and keyframes of a clip folder.

    Args:
        path: the clip folder (``DATASET.PATH``).
        gt_idx: keyframe indices into the sorted frames (``FINETUNE.GT_IDX``); empty: every frame
            that has a ``<stem>_trimap.png``.
        dilation: ``FINETUNE.DILATION`` for reading the keyframe trimaps.
    Raises UserError for a missing folder, no frames, no keyframes or a bad index.
    """
    folder = Path(path)
    if not str(path):
        raise UserError("DATASET.PATH is empty: set it to your clip folder in the yaml or as DATASET.PATH <dir>")
    if not folder.exists():
        raise UserError(f"DATASET.PATH {folder} does not exist; set it to your clip folder")
    if not folder.is_dir():
        raise UserError(f"DATASET.PATH {folder} is not a folder; set it to the folder holding the frames")
    names = visible_files(folder)
    _check_names(folder, names)
    stems = _stems(names, FRAME_SUFFIX)
    if not stems:
        raise UserError(
            f"DATASET.PATH {folder} has no frames: expected files named <stem>{FRAME_SUFFIX} (e.g. 00000{FRAME_SUFFIX})"
            + (" but it is empty" if not names else f"; it holds {len(names)} other files")
        )
    trimap_stems = _stems(names, TRIMAP_SUFFIX)
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
    return Clip(folder, stems, keyframes, set(trimap_stems), dilation)


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


def check_sizes(clip: Clip) -> tuple[int, int]:
    """All frames share one size and every keyframe trimap has its frame's size; PNGs are whole.

    Frame formats that are converted on reading (16-bit, grey, with alpha) are logged here, once.
    Returns (height, width); raises UserError naming the first file that is wrong.
    """
    first = clip.frame_path(0)
    size = image_size(first)
    formats: dict[str, str] = {}
    for index in range(len(clip)):
        path = clip.frame_path(index)
        header = png_header(path)
        other = (header.height, header.width) if header else image_size(path)
        if header is not None:
            if header.bit_depth == 16:
                formats.setdefault("16-bit (scaled to 8 bits)", path.name)
            if header.colour != "RGB":
                formats.setdefault(f"{header.colour} (converted to RGB)", path.name)
        if other != size:
            raise UserError(
                f"{clip.frame_path(index)} is {other[1]}x{other[0]} but {first.name} is {size[1]}x{size[0]}; "
                "all frames of a clip must have one size (resize them alike)"
            )
    for what, example in formats.items():
        log.warning("%s: %s frames, e.g. %s", clip.path, what, example)
    for index in clip.keyframe_indices:
        path = clip.trimap_path(index)
        header = png_header(path)
        if header is not None and header.colour not in ("grey", "grey+alpha"):
            colour = read_image(path, cv2.IMREAD_COLOR)
            if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])):
                log.warning(
                    "%s is a colour image: it is read as grey, where only 0 is background and only 255 foreground "
                    "(everything else is unknown); save trimaps as grey 0/128/255",
                    path,
                )
        other = (header.height, header.width) if header else image_size(path)
        if other != size:
            raise UserError(
                f"{clip.trimap_path(index)} is {other[1]}x{other[0]} but its frame is {size[1]}x{size[0]}; "
                "a trimap must have the size of its frame"
            )
    return size
