"""Making keyframe trimaps from what users have (``tgm.py trimap``): binary masks, alpha mattes, and
hand-drawn trimaps that need cleaning.

Inputs and outputs are both files or both folders. In a folder, every visible image is an
input and the output is named after the clip layout: ``<stem>_trimap.png``, where the stem is
the input's name without its extension and without a ``_mask``, ``_alpha``, ``_matte`` or
``_trimap`` suffix (so ``00012_mask.png`` gives ``00012_trimap.png``, ready to go next to
``00012_rgb.png``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import FRAME_SUFFIX, TRIMAP_SUFFIX, stems_with, visible_files
from dataset.segment import Box, PersonSegmenter, box_trimap, person_trimap, read_strokes
from dataset.trimap import (
    BACKGROUND,
    FOREGROUND,
    LABEL_GREY,
    UNKNOWN,
    alpha_to_trimap,
    decode_trimap,
    encode_labels,
    mask_to_trimap,
    snap_trimap,
)
from utils.errors import UserError
from utils.images import read_image, read_rgb
from utils.io import atomic_write_png, create_exclusive

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INPUT_SUFFIXES = ("_mask", "_alpha", "_matte", "_trimap", "_rgb")
BACKUP_SUFFIX = ".orig.png"  # <stem>_trimap.orig.png: not a frame or trimap name, so clips ignore it


def output_stem(path: Path) -> str:
    stem = path.stem
    for suffix in INPUT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def pairs(source: Path, out: Path, only_trimaps: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) files: a file to a file, or every image of a folder into a folder
    (``only_trimaps``: only its ``<stem>_trimap.png`` files, never a clip's frames)."""
    if not source.exists():
        raise UserError(f"{source} does not exist")
    if source.is_file():
        if out.is_dir():
            raise UserError(f"--out {out} is a folder but {source} is a file; give an output file (.png)")
        if out.suffix.lower() != ".png":
            raise UserError(f"--out {out}: trimaps are written as PNG; name the output file .png")
        return [(source, out)]
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file but {source} is a folder; give an output folder")
    inputs = sorted(
        source / name
        for name in visible_files(source)
        if name.lower().endswith(IMAGE_EXTENSIONS)
        and not name.endswith(BACKUP_SUFFIX)
        and (name.endswith(TRIMAP_SUFFIX) or not only_trimaps)
    )
    if not inputs:
        wanted = f"<stem>{TRIMAP_SUFFIX} files" if only_trimaps else f"images ({', '.join(IMAGE_EXTENSIONS)})"
        raise UserError(f"{source} holds no {wanted}")
    result = [(path, out / f"{output_stem(path)}{TRIMAP_SUFFIX}") for path in inputs]
    names = [o.name for _, o in result]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UserError(f"{source}: several inputs would be written to {out / clashes[0]}; keep one of them")
    return result


def read_grey(path: Path) -> np.ndarray:
    """An image as grey float32 in [0, 1] (8- or 16-bit; colour averaged by luminance)."""
    image = read_image(path)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.astype(np.float32) / scale


def binarise(grey: np.ndarray, threshold: float | None) -> np.ndarray:
    """Foreground of a mask: values above ``threshold`` (in [0, 1]); default: a 0/1 mask (no value
    above 1/255) is foreground where it is 1, any other mask where it is above 0.5."""
    if threshold is None:
        threshold = 0.0 if grey.max() <= 1 / 255 + 1e-6 else 0.5
    return grey > threshold


def _output_pairs(
    source: Path, out: Path, overwrite: bool, instead: str, only_trimaps: bool = False
) -> list[tuple[Path, Path]]:
    """The (input, output) pairs of ``source`` -> ``out``, checked (no output is its own input;
    existing outputs only with ``overwrite``; ``instead`` says what to do when it is), with the
    output folder made."""
    todo = pairs(source, out, only_trimaps)
    for path, target in todo:
        if target.resolve() == path.resolve():
            raise UserError(f"--out {target} is the input itself; {instead}")
        if target.exists() and not overwrite:
            raise UserError(f"{target} exists; pass --overwrite to replace it")
    (out if source.is_dir() else out.parent).mkdir(parents=True, exist_ok=True)
    return todo


def convert(source: Path, out: Path, make: Callable[[Path], np.ndarray], overwrite: bool, what: str) -> list[Path]:
    """Write ``make(input)`` (grey 0/128/255) for every (input, output) pair; returns the outputs.

    Existing outputs are refused unless ``overwrite``; an output never replaces its own input.
    """
    todo = _output_pairs(source, out, overwrite, "write the trimap elsewhere")
    for path, target in todo:
        trimap = make(path)
        atomic_write_png(target, trimap)
        log.info("%s -> %s (%s)", path.name, target, describe(decode_trimap(trimap)))
    log.info("%d %s -> %s", len(todo), what, out)
    return [target for _, target in todo]


def describe(labels: np.ndarray) -> str:
    share = [float((labels == c).mean()) for c in (BACKGROUND, UNKNOWN, FOREGROUND)]
    return f"background {share[0]:.1%}, unknown {share[1]:.1%}, foreground {share[2]:.1%}"


def from_mask(
    source: Path, out: Path, fg_width: int, bg_width: int, threshold: float | None = None, overwrite: bool = False
) -> list[Path]:
    """Binary masks -> trimaps with an unknown band ``fg_width`` pixels inside the edge and
    ``bg_width`` outside (see :func:`dataset.trimap.mask_to_trimap`)."""
    return convert(
        source, out, lambda p: encode_labels(mask_to_trimap(binarise(read_grey(p), threshold), fg_width, bg_width)),
        overwrite, "masks",
    )  # fmt: skip


def from_alpha(source: Path, out: Path, width: int, overwrite: bool = False) -> list[Path]:
    """Alpha mattes -> trimaps by the TCVOM rule: unknown where 0 < alpha < 1, widened with an
    elliptical kernel ``width`` pixels across (as the evaluation's narrow/medium/wide bands)."""
    return convert(source, out, lambda p: alpha_to_trimap(read_grey(p), width), overwrite, "alpha mattes")


@dataclass
class CheckReport:
    """What a hand-drawn trimap holds and what cleaning changes."""

    path: Path
    colour: bool
    bit_depth: int
    exact: dict[int, int]  # pixels exactly 0, 128, 255
    other: int  # pixels of any other value
    changed_class: int  # pixels that the reader (0 bg, 255 fg, else unknown) would classify otherwise
    empty: list[str]  # classes with no pixels after cleaning
    size: int

    def lines(self) -> list[str]:
        values = ", ".join(f"{v}: {n / self.size:.1%}" for v, n in self.exact.items())
        lines = [
            f"{self.path}: {'colour' if self.colour else 'grey'}, {self.bit_depth}-bit; {values}; "
            f"other values: {self.other / self.size:.2%} ({self.other} px)",
        ]
        if self.changed_class:
            lines.append(
                f"  cleaning moves {self.changed_class} px ({self.changed_class / self.size:.2%}) to another class: "
                "values near 0 or 255 that would otherwise be read as unknown, or the reverse"
            )
        lines += [f"  warning: no {name} pixels after cleaning" for name in self.empty]
        return lines


def check_trimap(path: Path) -> tuple[CheckReport, np.ndarray]:
    """The report on a hand-drawn trimap and its cleaned labels (every value snapped to the nearest
    of 0 / 128 / 255)."""
    image = read_image(path)
    colour = image.ndim == 3 and image.shape[2] >= 3 and not (
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )  # fmt: skip
    bit_depth = 16 if image.dtype == np.uint16 else 8
    grey = np.clip(read_grey(path) * 255 + 0.5, 0, 255).astype(np.uint8)
    labels = snap_trimap(grey)
    exact = {int(v): int((grey == v).sum()) for v in LABEL_GREY}
    names = ("background", "unknown", "foreground")
    report = CheckReport(
        path=path, colour=colour, bit_depth=bit_depth, exact=exact, other=int(grey.size - sum(exact.values())),
        changed_class=int((labels != decode_trimap(grey)).sum()),
        empty=[names[c] for c in (BACKGROUND, UNKNOWN, FOREGROUND) if not (labels == c).any()], size=grey.size,
    )  # fmt: skip
    return report, labels


def check(source: Path, out: Path | None, in_place: bool = False, overwrite: bool = False) -> list[CheckReport]:
    """Report on hand-drawn trimaps and write cleaned copies (0/128/255 grey) to ``out``; with
    ``in_place`` replace the originals instead, keeping each original once as
    ``<name>.orig.png`` next to it. In a folder only its ``<stem>_trimap.png`` files are checked
    (a clip folder's frames are never touched). Every input is read and checked before anything
    is written, so a bad file stops the run with nothing replaced."""
    if out is None and not in_place:
        todo = [(p, None) for p, _ in pairs(source, source.with_name(source.name + "_cleaned.png"), True)]
    elif in_place:
        if out is not None:
            raise UserError("give either --out or --in_place, not both")
        todo = [(p, p) for p, _ in pairs(source, source.with_suffix(".png") if source.is_file() else source, True)]
        not_png = [p for p, _ in todo if p.suffix.lower() != ".png"]
        if not_png:
            raise UserError(f"{not_png[0]} is not a PNG; --in_place keeps names, so write a PNG copy with --out")
    else:
        todo = _output_pairs(source, out, overwrite, "pass --in_place to replace originals", only_trimaps=True)
    reports = [check_trimap(path)[0] for path, _ in todo]  # every input read and checked before any write
    for report in reports:
        for line in report.lines():
            (log.warning if line.lstrip().startswith("warning") else log.info)(line)
    for path, target in todo:
        if target is None:
            continue
        labels = check_trimap(path)[1]  # read again: a folder of 4K trimaps need not fit in memory at once
        if in_place:
            backup = path.with_name(path.name[: -len(path.suffix)] + BACKUP_SUFFIX)
            create_exclusive(backup, path.read_bytes())  # the original, once
        atomic_write_png(target, encode_labels(labels), durable=in_place)
    return reports


def from_box(
    frame: Path,
    out: Path,
    box_text: str | None,
    band_per_side: int,
    fg_strokes: Path | None = None,
    bg_strokes: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """A frame -> its trimap from a box around the subject and/or strokes (GrabCut, then the band
    of ``from-mask``; see dataset.segment)."""
    if not frame.is_file():
        raise UserError(f"{frame} does not exist; give the frame (an image file) the box is drawn on")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: trimaps are written as PNG; name the output file .png")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == frame.resolve():
        raise UserError(f"--out {out} is the frame itself; write the trimap elsewhere")
    rgb = read_rgb(frame)
    height, width = rgb.shape[:2]
    box = Box.parse(box_text, width, height) if box_text else None
    fg = read_strokes(fg_strokes, height, width, "--fg_strokes")
    bg = read_strokes(bg_strokes, height, width, "--bg_strokes")
    labels = box_trimap(rgb, box, band_per_side, fg, bg)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_png(out, encode_labels(labels))
    log.info("%s -> %s (%s)", frame.name, out, describe(labels))
    return out


def from_person(sources: list[Path], out: Path, band_per_side: int, overwrite: bool = False) -> list[Path]:
    """Frames (files, or folders of ``<stem>_rgb.png``) -> trimaps of the people in them (the
    optional person segmenter; see dataset.segment.PersonSegmenter)."""
    frames = []
    for source in sources:
        if source.is_dir():
            found = sorted(source / f"{stem}{FRAME_SUFFIX}" for stem in stems_with(source, FRAME_SUFFIX))
            if not found:
                raise UserError(f"{source} holds no <stem>{FRAME_SUFFIX} frames")
            frames += found
        elif source.is_file():
            frames.append(source)
        else:
            raise UserError(f"{source} does not exist")
    single = len(frames) == 1 and out.suffix.lower() == ".png"
    targets = [out] if single else [out / f"{output_stem(f)}{TRIMAP_SUFFIX}" for f in frames]
    for frame, target in zip(frames, targets):
        if target.exists() and not overwrite:
            raise UserError(f"{target} exists; pass --overwrite to replace it")
        if target.resolve() == frame.resolve():
            raise UserError(f"--out {target} is the frame itself; write the trimap elsewhere")
    segmenter = PersonSegmenter()  # after the checks: a missing extra is said before any work, a bad path too
    (out.parent if single else out).mkdir(parents=True, exist_ok=True)
    for frame, target in zip(frames, targets):
        labels = person_trimap(segmenter.probability(read_rgb(frame)), band_per_side)
        atomic_write_png(target, encode_labels(labels))
        log.info("%s -> %s (%s)", frame.name, target, describe(labels))
    return targets
