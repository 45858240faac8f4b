"""Reading a clip folder: frames ``<stem>_rgb.png`` in sorted order, keyframes ``<stem>_trimap.png``.

Frames and trimaps are paired by stem (the published finetuning paired them by list position,
which is wrong unless every frame has a trimap).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, decode_trimap
from utils.errors import UserError

FRAME_SUFFIX = "_rgb.png"
TRIMAP_SUFFIX = "_trimap.png"
ALPHA_SUFFIX = "_alpha.png"  # ground-truth mattes (evaluation, generated clips, importers)

log = logging.getLogger(__name__)


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

    def frame_path(self, index: int) -> Path:
        return self.path / f"{self.stems[index]}{FRAME_SUFFIX}"

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


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imread that raises a UserError instead of returning None."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, flags) if data is not None and data.size else None
    if image is None:
        raise UserError(f"{path} is missing or not a readable image; re-export it as PNG")
    return image


def read_alpha(path: Path) -> np.ndarray:
    """An alpha matte (8- or 16-bit grey PNG; RGBA: its alpha channel) as float64 in [0, 1]."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = image[..., -1] if image.shape[2] == 4 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.astype(np.float64) / (65535.0 if image.dtype == np.uint16 else 255.0)


def read_frame(path: Path) -> np.ndarray:
    """A frame as H x W x 3 uint8 in RGB order.

    Grey frames are expanded to 3 channels, an alpha channel is dropped and 16-bit frames are
    scaled to 8 bits (``check_sizes`` says so once per clip).
    """
    image = read_image(path)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UserError(f"{path} has pixel type {image.dtype}; frames must be 8-bit (or 16-bit) PNGs")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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


PNG_END = b"IEND\xaeB`\x82"
PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class PngHeader:
    height: int
    width: int
    bit_depth: int
    colour: str


def png_header(path: Path) -> PngHeader | None:
    """Size, bit depth and colour type from a PNG header without decoding; None if not a PNG.

    Raises UserError for a PNG that is cut short (no IEND chunk at its end).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
            handle.seek(max(0, path.stat().st_size - 8))
            tail = handle.read(8)
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror})") from exc
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    if tail != PNG_END:
        raise UserError(f"{path} is a truncated PNG (it does not end with an IEND chunk); export it again")
    return PngHeader(
        height=int.from_bytes(head[20:24], "big"),
        width=int.from_bytes(head[16:20], "big"),
        bit_depth=head[24],
        colour=PNG_COLOUR_TYPES.get(head[25], f"type {head[25]}"),
    )


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header when it is a PNG."""
    header = png_header(path)
    if header is None:
        return read_image(path).shape[:2]
    return header.height, header.width


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
