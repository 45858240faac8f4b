"""Clips: frames in order and keyframes ``<stem>_trimap.png``, found and checked.

A clip is a folder of frames ``<stem>_rgb.png`` (sorted by stem) with its keyframe trimaps beside
them, or a video file (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ...) whose frame ``i`` has the stem
``tgm.py extract`` gives it (``00000``, ``00001``, ...) and whose trimaps live in a folder of their
own (``DATASET.TRIMAPS``; by default ``<video stem>_trimaps/`` beside the video).

Frames and trimaps are paired by stem (the published finetuning paired them by list position,
which is wrong unless every frame has a trimap). Where a clip's frames come from is a
``FrameSource``: a folder of PNGs (``FolderFrames``) or a video decoded on demand
(``dataset.video.VideoFrames``); image files themselves are read by ``utils/images.py``.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, read_trimap
from dataset.video import (
    DEFAULT_CACHE_MIB,
    DEFAULT_SPILL_MIB,
    FRAME_SUFFIX,
    VIDEO_EXTENSIONS,
    FrameCache,
    VideoFrames,
    is_video,
    probe_video,
)  # fmt: skip
from utils.errors import UserError
from utils.images import image_size, png_header, read_image, read_rgb
from utils.io import file_digest

TRIMAPS_FOLDER_SUFFIX = "_trimaps"  # a video clip's keyframes: <video stem>_trimaps/ beside it
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


@dataclass(frozen=True)
class OffsetFrames:
    """A video's frames from ``first`` on, by index from 0: a clip of a range of the video."""

    video: VideoFrames
    first: int

    def read_rgb(self, index: int) -> np.ndarray:
        return self.video.read_rgb(self.first + index)

    def digest(self, index: int) -> str:
        return self.video.digest(self.first + index)

    def forget(self, indices) -> None:
        self.video.forget(self.first + i for i in indices)


def frame_range(text: str, count: int, where: Path) -> tuple[int, int]:
    """``DATASET.FRAMES`` ("FIRST-LAST", positions 0..count-1; empty: all) as (first, last)."""
    if not str(text).strip():
        return 0, count - 1
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if match is None or not int(match[1]) <= int(match[2]) < count:
        raise UserError(
            f"DATASET.FRAMES {text!r}: give FIRST-LAST with 0 <= FIRST <= LAST < {count} (the frames of {where}), "
            "or leave it empty for every frame"
        )
    return int(match[1]), int(match[2])


@dataclass
class Clip:
    """A clip: its frames in order and which of them are keyframes.

    path: the clip folder, or the video file; stems: frame stems in order; keyframe_indices:
    sorted indices into ``stems``; dilation: ``FINETUNE.DILATION``, applied whenever a keyframe
    trimap is read; trimap_dir: where the keyframe trimaps are (None: ``path``, a folder);
    video: the decoder of a video clip (None for a folder of frames).
    """

    path: Path
    stems: list[str]
    keyframe_indices: list[int]
    trimap_stems: set[str] = field(default_factory=set)
    dilation: int = 0
    trimap_dir: Path | None = None
    video: VideoFrames | None = None
    first: int = 0  # a video clip's first frame in its video (DATASET.FRAMES): index i is video frame first + i

    @property
    def name(self) -> str:
        """Names the result folder: the folder's name, or the video's stem."""
        return self.path.stem if self.video is not None else self.path.name

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def frames(self) -> FrameSource:
        if self.video is None:
            return FolderFrames(self.path, tuple(self.stems))
        return self.video if self.first == 0 else OffsetFrames(self.video, self.first)

    def frame_path(self, index: int) -> Path:
        """The PNG of frame ``index`` (folder clips only: a video clip's frames have no file)."""
        if self.video is not None:
            raise ValueError(f"{self.path} is a video: its frames have no files")
        return self.path / f"{self.stems[index]}{FRAME_SUFFIX}"

    def describe_frame(self, index: int) -> str:
        """Frame ``index`` for a message: its file, or the video and the frame's number."""
        if self.video is not None:
            return f"{self.path} frame {index}"
        return str(self.frame_path(index))

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as H x W x 3 uint8, RGB order (see ``utils.images.read_rgb``)."""
        return self.frames.read_rgb(index)

    def frame_digest(self, index: int) -> str:
        return self.frames.digest(index)

    def trimap_path(self, index: int) -> Path:
        return (self.trimap_dir or self.path) / f"{self.stems[index]}{TRIMAP_SUFFIX}"

    def close(self) -> None:
        """Let go of the video decoder and its cached frames (a folder clip holds nothing)."""
        if self.video is not None:
            self.video.close()

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


@dataclass(frozen=True)
class FrameBudget:
    """How many decoded frames of a video clip are kept: MiB in RAM, then MiB in a temporary folder
    (``SYSTEM.FRAME_CACHE_MIB``, ``SYSTEM.FRAME_SPILL_MIB``; the folder under ``spill_root``, by
    default the system's temporary folder)."""

    ram_mib: int = DEFAULT_CACHE_MIB
    spill_mib: int = DEFAULT_SPILL_MIB
    spill_root: Path | None = None

    def cache(self) -> FrameCache:
        return FrameCache(self.ram_mib << 20, self.spill_mib << 20, self.spill_root)


def default_trimap_dir(video: Path) -> Path:
    """Where a video clip's keyframe trimaps are unless DATASET.TRIMAPS says: ``<stem>_trimaps/`` beside it."""
    return video.with_name(f"{video.stem}{TRIMAPS_FOLDER_SUFFIX}")


def scan_clip(
    path: str | Path,
    gt_idx: Sequence[int] = (),
    dilation: int = 0,
    trimaps: str | Path = "",
    budget: FrameBudget | None = None,
    frames: str = "",
) -> Clip:
    """Find the frames and keyframes of a clip folder or a video file.

    Args:
        path: the clip folder or video file (``DATASET.PATH``).
        gt_idx: keyframe indices into the sorted frames (``FINETUNE.GT_IDX``); empty: every frame
            that has a ``<stem>_trimap.png``.
        dilation: ``FINETUNE.DILATION`` for reading the keyframe trimaps.
        trimaps: a video clip's trimap folder (``DATASET.TRIMAPS``; empty: ``<stem>_trimaps/``).
        budget: how many decoded frames a video clip keeps (default: ``FrameBudget()``).
        frames: ``DATASET.FRAMES``: "FIRST-LAST" keeps those frames only (and the keyframes among them;
            ``gt_idx`` then counts from FIRST); empty: every frame.
    Raises UserError for a missing folder, no frames, no keyframes or a bad index.
    """
    folder = Path(path)
    if not str(path):
        raise UserError("DATASET.PATH is empty: set it to your clip folder in the yaml or as DATASET.PATH <dir>")
    if not folder.exists():
        raise UserError(f"DATASET.PATH {folder} does not exist; set it to your clip folder or video file")
    if folder.is_file() and is_video(folder):
        return _scan_video(folder, gt_idx, dilation, Path(trimaps) if str(trimaps) else None, budget, frames)
    if not folder.is_dir():
        raise UserError(
            f"DATASET.PATH {folder} is neither a folder nor a video ({', '.join(VIDEO_EXTENSIONS)}); set it to the "
            "folder holding the frames or to the video"
        )
    if str(trimaps):
        raise UserError(
            f"DATASET.TRIMAPS {trimaps} is for video clips; {folder} is a folder, whose trimaps lie beside its frames"
        )
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
    first, last = frame_range(frames, len(stems), folder)
    stems = stems[first : last + 1]
    trimap_stems = [s for s in trimap_stems if s in set(stems)]
    keyframes = _keyframes(folder, folder, stems, trimap_stems, gt_idx, FRAME_SUFFIX)
    return Clip(folder, stems, keyframes, set(trimap_stems), dilation)


def _scan_video(
    video: Path, gt_idx: Sequence[int], dilation: int, trimaps: Path | None, budget: FrameBudget | None, frames: str
) -> Clip:
    info = probe_video(video)
    trimap_dir = trimaps or default_trimap_dir(video)
    if not trimap_dir.is_dir():
        raise UserError(
            f"{video} is a video clip and its trimap folder {trimap_dir} does not exist: put its keyframes there as "
            f"<frame number>{TRIMAP_SUFFIX} (e.g. {info.stems[0]}{TRIMAP_SUFFIX}), or name the folder in "
            "DATASET.TRIMAPS"
        )
    names = visible_files(trimap_dir)
    _check_names(trimap_dir, names)
    stems = info.stems
    trimap_stems = _stems(names, TRIMAP_SUFFIX)
    orphans = sorted(set(trimap_stems) - set(stems))
    if orphans:
        raise UserError(
            f"{trimap_dir / (orphans[0] + TRIMAP_SUFFIX)} names no frame of {video} ({info.frame_count} frames, "
            f"{stems[0]} to {stems[-1]}); trimaps of a video are named <frame number>{TRIMAP_SUFFIX} with "
            f"{len(stems[0])} digits"
        )
    first, last = frame_range(frames, len(stems), video)
    stems = stems[first : last + 1]
    trimap_stems = [s for s in trimap_stems if s in set(stems)]
    keyframes = _keyframes(video, trimap_dir, stems, trimap_stems, gt_idx, " (a frame of the video)")
    decoder = VideoFrames(info, (budget or FrameBudget()).cache())
    return Clip(video, stems, keyframes, set(trimap_stems), dilation, trimap_dir, decoder, first)


def _keyframes(
    folder: Path, trimap_dir: Path, stems: list[str], trimap_stems: list[str], gt_idx: Sequence[int], frame_word: str
) -> list[int]:
    """The keyframe indices of the clip at ``folder`` (a folder or a video): ``gt_idx`` checked, or
    every frame with a trimap."""
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
                    f"FINETUNE.GT_IDX names frame {i} ({stems[i]}{frame_word}), but "
                    f"{trimap_dir / (stems[i] + TRIMAP_SUFFIX)} does not exist; draw it or drop {i} from GT_IDX"
                )
        keyframes = sorted(keyframes)
    else:
        keyframes = sorted(index_of[s] for s in trimap_stems)
    if not keyframes:
        if trimap_dir != folder:
            raise UserError(
                f"{folder} has no keyframes: add at least one <frame number>{TRIMAP_SUFFIX} to {trimap_dir}"
            )
        raise UserError(
            f"{folder} has no keyframes: add at least one <stem>{TRIMAP_SUFFIX} next to its <stem>{FRAME_SUFFIX}"
        )
    return keyframes


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
    Returns (height, width); raises UserError naming the first file that is wrong. A video's
    frames share the size its stream says.
    """
    if clip.video is not None:
        size = (clip.video.info.height, clip.video.info.width)
        _check_trimap_sizes(clip, size, f"{clip.path}'s frames are")
        return size
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
    _check_trimap_sizes(clip, size, "its frame is")
    return size


def _check_trimap_sizes(clip: Clip, size: tuple[int, int], frame_is: str) -> None:
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
                f"{clip.trimap_path(index)} is {other[1]}x{other[0]} but {frame_is} {size[1]}x{size[0]}; "
                "a trimap must have the size of its frame"
            )


@dataclass
class ClipFrames:
    """A clip's frames by stem, wherever they are (a folder of PNGs or a video): for the tools that
    pair frames with outputs named by stem (overlays, mattes)."""

    path: Path
    stems: list[str]
    source: FrameSource

    def __post_init__(self) -> None:
        self._index = {stem: i for i, stem in enumerate(self.stems)}

    @property
    def is_video(self) -> bool:
        return isinstance(self.source, VideoFrames)

    def index(self, stem: str) -> int:
        return self._index[stem]

    def read_rgb(self, stem: str) -> np.ndarray:
        return self.source.read_rgb(self._index[stem])

    def describe(self, stem: str) -> str:
        """A frame for a message: its file, or the video and the frame's number."""
        if self.is_video:
            return f"{self.path} frame {self._index[stem]}"
        return str(self.path / f"{stem}{FRAME_SUFFIX}")

    def size(self) -> tuple[int, int]:
        """(height, width) of the frames (of the first, for a folder)."""
        if isinstance(self.source, VideoFrames):
            return self.source.info.height, self.source.info.width
        return image_size(self.path / f"{self.stems[0]}{FRAME_SUFFIX}")

    def close(self) -> None:
        if isinstance(self.source, VideoFrames):
            self.source.close()


def locate_clip(dataroot: Path, name: str) -> Path:
    """Where the clip ``name`` of a workspace is: the folder ``dataroot/name``, else a video
    ``dataroot/name.<ext>`` (the folder's path when neither exists, for the caller's message)."""
    folder = dataroot / name
    if folder.is_dir():
        return folder
    for path in sorted(dataroot.glob(f"{glob.escape(name)}.*")):
        if path.is_file() and is_video(path):
            return path
    return folder


def open_clip_frames(path: Path, ram_mib: int = 64) -> ClipFrames:
    """The frames of a clip folder or a video file (a video keeps up to ``ram_mib`` decoded frames);
    UserError when there are none."""
    if path.is_file() and is_video(path):
        info = probe_video(path)
        return ClipFrames(path, info.stems, VideoFrames(info, FrameCache(ram_mib << 20)))
    stems = stems_with(path, FRAME_SUFFIX)
    if not stems:
        raise UserError(f"{path} holds no <stem>{FRAME_SUFFIX} frames and is not a video")
    return ClipFrames(path, stems, FolderFrames(path, tuple(stems)))
