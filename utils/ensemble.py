"""Fusing the parts of a propagation result into one trimap per frame (spec section 6)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import FRAME_SUFFIX, image_size, read_image
from dataset.trimap import encode_labels
from utils.errors import UserError
from utils.io import BackgroundWriter, atomic_write_png, ensure_writable_dir
from utils.logs import progress

MEM_SUFFIX = re.compile(r"_mem\d+$")


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


def read_conf(result_dir: Path) -> list[dict[str, float]]:
    """conf.json of a result folder: one ``{stem: weight}`` dict per part."""
    with open(result_dir / "conf.json") as handle:
        conf = json.load(handle)
    if not isinstance(conf, list) or not all(isinstance(part, dict) for part in conf):
        raise ValueError("conf.json must hold a list of {stem: weight} dicts")
    return conf


def frames_of(conf: list[dict[str, float]]) -> dict[str, list[tuple[int, float]]]:
    """stem -> [(part index, weight)] in part order; stems in order of first appearance."""
    covered: dict[str, list[tuple[int, float]]] = {}
    for k, part in enumerate(conf):
        for stem, weight in part.items():
            covered.setdefault(stem, []).append((k, float(weight)))
    return covered


def clip_name(result_dir_name: str) -> str:
    """``<clip>_mem<N>`` -> ``<clip>``."""
    return MEM_SUFFIX.sub("", result_dir_name)


class ResultCheck:
    """What one result folder holds, checked before anything is written."""

    def __init__(self, result_dir: Path, dataroot: Path | None) -> None:
        self.dir = result_dir
        conf_path = result_dir / "conf.json"
        if not conf_path.exists():
            raise UserError(
                f"{conf_path} is missing: {result_dir} is not a finished test_mf_2.py result; rerun test_mf_2.py"
            )
        try:
            self.conf = read_conf(result_dir)
        except (ValueError, OSError) as exc:
            raise UserError(f"{conf_path} is not a readable conf.json ({exc}); rerun test_mf_2.py") from exc
        self.frames = frames_of(self.conf)
        size = None
        for stem, parts in self.frames.items():
            for k, _ in parts:
                png = self.part_png(k, stem)
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
        self.rgb_dir = None
        if dataroot is not None:
            self.rgb_dir = dataroot / clip_name(result_dir.name)
            for stem in self.frames:
                rgb = self.rgb_dir / f"{stem}{FRAME_SUFFIX}"
                if not rgb.exists():
                    raise UserError(
                        f"{rgb} is missing: the overlay of frame {stem} needs it; check --dataroot "
                        f"(the folder holding {clip_name(result_dir.name)}/)"
                    )

    def part_png(self, k: int, stem: str) -> Path:
        return self.dir / f"part{k}" / f"{stem}_tri.png"


def ensemble_result(check: ResultCheck, writer: BackgroundWriter) -> int:
    """Write ensemble/ (and envis/ when frames are known) for one result folder."""
    out = ensure_writable_dir(check.dir / "ensemble", "ensemble output")
    vis = ensure_writable_dir(check.dir / "envis", "overlay output") if check.rgb_dir is not None else None
    for stem, parts in progress(check.frames.items(), desc=check.dir.name, unit="frame"):
        pngs = [read_image(check.part_png(k, stem), cv2.IMREAD_COLOR) for k, _ in parts]
        labels = fuse(pngs, [w for _, w in parts])
        writer.submit(atomic_write_png, out / f"{stem}_trimap.png", encode_labels(labels))
        if vis is not None:
            frame = read_image(check.rgb_dir / f"{stem}{FRAME_SUFFIX}", cv2.IMREAD_COLOR)
            writer.submit(atomic_write_png, vis / f"{stem}.png", overlay(frame, labels))
    writer.flush()
    return len(check.frames)
