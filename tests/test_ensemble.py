"""Fusing parts: weights, argmax, ties, and the ensemble script on hand-made parts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import run_script
from inference.ensemble import frames_of, fuse, overlay
from inference.layout import clip_name
from utils.io import atomic_write_png


def px(*values):
    return np.array([[values]], dtype=np.uint8)  # 1 x 1 x 3


@pytest.mark.unit
def test_single_part_is_its_own_argmax():
    assert fuse([px(10, 200, 30)], [0.1]).tolist() == [[1]]


@pytest.mark.unit
def test_weights_decide_between_disagreeing_parts():
    a, b = px(0, 200, 0), px(0, 0, 250)
    assert fuse([a, b], [1.0, 0.5]).tolist() == [[1]]  # 200 > 125
    assert fuse([a, b], [0.5, 1.0]).tolist() == [[2]]  # 100 < 250


@pytest.mark.unit
def test_ties_go_to_the_first_class():
    assert fuse([px(100, 100, 100)], [1.0]).tolist() == [[0]]
    assert fuse([px(0, 90, 90)], [1.0]).tolist() == [[1]]
    assert fuse([px(0, 100, 0), px(0, 0, 100)], [0.5, 0.5]).tolist() == [[1]]


@pytest.mark.unit
def test_frames_of_collects_parts_in_order():
    conf = [{"a": 1.0, "b": 0.5}, {"b": 1.0, "a": 0.5}, {"c": 1.0}]
    assert frames_of(conf) == {"a": [(0, 1.0), (1, 0.5)], "b": [(0, 0.5), (1, 1.0)], "c": [(2, 1.0)]}


@pytest.mark.unit
def test_clip_name_strips_the_mem_suffix():
    assert clip_name("my_clip_mem5") == "my_clip"
    assert clip_name("a_mem_b_mem0") == "a_mem_b"


@pytest.mark.unit
def test_overlay_is_half_frame_half_trimap():
    frame = np.full((1, 3, 3), 100, np.uint8)
    out = overlay(frame, np.array([[0, 1, 2]], np.uint8))
    assert out[0, :, 0].tolist() == [50, 114, 177]


@pytest.mark.e2e
def test_ensemble_script_writes_labels_and_overlays(tmp_path):
    result = tmp_path / "pred" / "clip_mem5"
    data = tmp_path / "data" / "clip"
    data.mkdir(parents=True)
    conf = [{"f0": 1.0, "f1": 0.5}, {"f1": 1.0}]
    (result / "part0").mkdir(parents=True)
    (result / "part1").mkdir()
    (result / "conf.json").write_text(json.dumps(conf))
    atomic_write_png(result / "part0" / "f0_tri.png", np.tile(px(0, 0, 255), (2, 2, 1)))
    atomic_write_png(result / "part0" / "f1_tri.png", np.tile(px(0, 255, 0), (2, 2, 1)))
    atomic_write_png(result / "part1" / "f1_tri.png", np.tile(px(200, 0, 0), (2, 2, 1)))
    for stem in ("f0", "f1"):
        atomic_write_png(data / f"{stem}_rgb.png", np.full((2, 2, 3), 60, np.uint8))
    run = run_script("ensemble.py", "--predroot", tmp_path / "pred", "--dataroot", tmp_path / "data")
    assert run.returncode == 0, run.stderr
    f0 = cv2.imread(str(result / "ensemble" / "f0_trimap.png"), cv2.IMREAD_GRAYSCALE)
    f1 = cv2.imread(str(result / "ensemble" / "f1_trimap.png"), cv2.IMREAD_GRAYSCALE)
    assert (f0 == 255).all()
    assert (f1 == 0).all()  # 200 * 1.0 beats 255 * 0.5
    assert cv2.imread(str(result / "envis" / "f0.png")).shape == (2, 2, 3)
