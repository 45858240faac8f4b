"""Fusing the parts of a propagation result into one trimap per frame (spec section 6)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataset.trimap import encode_labels

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
