"""Fusing the parts of a propagation result into one trimap per frame (docs/method.md, "The ensemble")."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import FRAME_SUFFIX, ClipFrames, locate_clip, open_clip_frames
from dataset.trimap import encode_labels
from inference.layout import Conf, ResultFolder
from inference.uncertainty import Uncertainty, frame_score, png_to_probs, uncertainty_of, write_uncertainty
from utils.errors import UserError
from utils.images import image_size, read_image
from utils.io import BackgroundWriter, atomic_write_png, ensure_writable_dir
from utils.logs import progress

log = logging.getLogger(__name__)


def fuse(part_pngs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Labels (H x W uint8, 0/1/2) from the probability PNGs of the parts covering one frame.

    part_pngs: H x W x 3 uint8 [bg, unknown, fg], in part order; weights: their conf.json
    weights. One part: the PNG itself, unweighted; several: ``sum(png * weight)``. Argmax over
    the 3 channels; on a tie the first (lowest) class wins.
    """
    if not part_pngs:
        raise ValueError("a frame needs at least one part")
    if len(part_pngs) == 1:
        scores = part_pngs[0].astype(np.float64)
    else:
        scores = sum(png.astype(np.float64) * weight for png, weight in zip(part_pngs, weights))
    return np.argmax(scores, axis=2).astype(np.uint8)


def overlay(rgb_bgr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``0.5 * frame + 0.5 * trimap`` (trimap as 0/128/255 grey), uint8, frame's channel order."""
    grey = encode_labels(labels).astype(np.float32)[..., None]
    return (0.5 * rgb_bgr.astype(np.float32) + 0.5 * grey).astype(np.uint8)


def frames_of(conf: Conf) -> dict[str, list[tuple[int, float]]]:
    """stem -> [(part index, weight)] in part order; stems in order of first appearance."""
    covered: dict[str, list[tuple[int, float]]] = {}
    for k, part in enumerate(conf):
        for stem, weight in part.items():
            covered.setdefault(stem, []).append((k, float(weight)))
    return covered


class ResultCheck:
    """What one result folder holds, checked before anything is written.

    result: the folder; dataroot: the workspace holding the clip (``<clip>/<stem>_rgb.png`` or a
    video ``<clip>.mp4``) for the overlays, or None for no overlays; clip_path: the clip itself
    (its folder or video) when the caller knows it.
    """

    def __init__(self, result: ResultFolder, dataroot: Path | None, clip_path: Path | None = None) -> None:
        self.result = result
        conf_path = result.conf_path
        if not result.is_finished():
            raise UserError(
                f"{conf_path} is missing: {result.path} is not a finished test_mf_2.py result; rerun test_mf_2.py"
            )
        try:
            self.conf = result.read_conf()
        except (ValueError, OSError) as exc:
            raise UserError(f"{conf_path} is not a readable conf.json ({exc}); rerun test_mf_2.py") from exc
        self.frames = frames_of(self.conf)
        if not result.part_dirs() and result.is_fused(self.frames):
            raise UserError(
                f"{result.path} was fused while propagating (test_mf_2.py --discard_parts: its part PNGs were not "
                "kept); its ensemble/ is final. To fuse it again, propagate again without --discard_parts"
            )
        size = None
        for stem, parts in self.frames.items():
            for k, _ in parts:
                png = result.part_png(k, stem)
                if not png.exists():
                    raise UserError(
                        f"{png} is missing but conf.json names frame {stem} in part {k}; rerun test_mf_2.py"
                    )
                this = image_size(png)
                if size is None:
                    size, first = this, png
                elif this != size:
                    raise UserError(
                        f"{png} is {this[1]}x{this[0]} but {first} is {size[1]}x{size[0]}; "
                        "the parts of one result must have one size (rerun test_mf_2.py into an empty --save)"
                    )
        self.clip_frames: ClipFrames | None = None
        if dataroot is not None:
            where = clip_path or locate_clip(dataroot, result.clip_name)
            if where.is_dir():
                self._check_frame_files(where, size)
            elif not where.exists():
                raise UserError(
                    f"{where} is missing: the overlays need the clip's frames; check --dataroot "
                    f"(the folder holding {result.clip_name}/ or {result.clip_name}.mp4)"
                )
            self.clip_frames = open_clip_frames(where)
            missing = [stem for stem in self.frames if stem not in set(self.clip_frames.stems)]
            if missing:
                raise UserError(
                    f"{where} has no frame {missing[0]}, which {result.path} holds a trimap of; --dataroot holds "
                    "another version of the clip: point it at the frames that were propagated"
                )
            frame_size = self.clip_frames.size()
            if size is not None and frame_size != size:
                raise UserError(
                    f"{where}'s frames are {frame_size[1]}x{frame_size[0]} but the trimaps of {result.path} are "
                    f"{size[1]}x{size[0]}; "
                    "--dataroot holds another version of the clip: point it at the frames that were propagated"
                )

    def _check_frame_files(self, folder: Path, size: tuple[int, int] | None) -> None:
        for stem in self.frames:
            rgb = folder / f"{stem}{FRAME_SUFFIX}"
            if not rgb.exists():
                raise UserError(
                    f"{rgb} is missing: the overlay of frame {stem} needs it; check --dataroot "
                    f"(the folder holding {self.result.clip_name}/)"
                )
            rgb_size = image_size(rgb)
            if size is not None and rgb_size != size:
                raise UserError(
                    f"{rgb} is {rgb_size[1]}x{rgb_size[0]} but the trimaps of {self.result.path} are "
                    f"{size[1]}x{size[0]}; "
                    "--dataroot holds another version of the clip: point it at the frames that were propagated"
                )


def fuse_frame(
    result: ResultFolder,
    stem: str,
    pngs: Sequence[np.ndarray],
    weights: Sequence[float],
    clip_frames: ClipFrames | None,
    writer: BackgroundWriter,
) -> float:
    """Fuse one frame's part PNGs (H x W x 3 uint8): its ensemble trimap and, with ``clip_frames``,
    its overlay go to ``writer``; returns the frame's uncertainty score."""
    labels = fuse(pngs, weights)
    writer.submit(atomic_write_png, result.ensemble_png(stem), encode_labels(labels))
    if clip_frames is not None:
        frame = np.ascontiguousarray(clip_frames.read_rgb(stem)[..., ::-1])  # overlays are written from BGR
        writer.submit(atomic_write_png, result.envis_png(stem), overlay(frame, labels))
    return frame_score([png_to_probs(png) for png in pngs], weights)


def ensemble_result(check: ResultCheck, writer: BackgroundWriter) -> Uncertainty:
    """Write ensemble/ (and envis/ when frames are known), uncertainty.json and uncertainty.png for
    one result folder; returns the uncertainty."""
    result = check.result
    ensure_writable_dir(result.ensemble_dir, "ensemble output")
    if check.clip_frames is not None:
        ensure_writable_dir(result.envis_dir, "overlay output")
    scores = {}
    try:
        for stem, parts in progress(check.frames.items(), desc=result.name, unit="frame"):
            pngs = [read_image(result.part_png(k, stem), cv2.IMREAD_COLOR) for k, _ in parts]
            scores[stem] = fuse_frame(result, stem, pngs, [w for _, w in parts], check.clip_frames, writer)
        writer.flush()
    finally:
        if check.clip_frames is not None:
            check.clip_frames.close()
    uncertainty = uncertainty_of(scores, check.conf)
    write_uncertainty(result, uncertainty)
    return uncertainty


def ensemble_folders(
    results: Sequence[ResultFolder], dataroot: Path | None, clip_path: Path | None = None
) -> dict[str, Uncertainty]:
    """Check every result folder first, then fuse each (``ensemble.py``); the uncertainty of each,
    by folder name. ``clip_path``: the clip of a single result (its folder or video), when known."""
    with contextlib.ExitStack() as held:
        for result in results:  # one writer per result folder: held from the checks to the last file
            held.enter_context(result.lock())
        checks = [ResultCheck(result, dataroot, clip_path) for result in results]
        return _fuse(checks)


def _fuse(checks: Sequence[ResultCheck]) -> dict[str, Uncertainty]:
    writer = BackgroundWriter()
    found = {}
    try:
        for check in checks:
            uncertainty = found[check.result.name] = ensemble_result(check, writer)
            writer.flush()
            log.info(
                "%s: %d frames -> %s; annotate next: %s (see %s)", check.result.name, len(check.frames),
                check.result.ensemble_dir, ", ".join(uncertainty.suggested) or "-", check.result.uncertainty_png,
            )  # fmt: skip
    finally:
        writer.close()
    return found
