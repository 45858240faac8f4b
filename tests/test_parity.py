"""The shared parity case: our scripts against the published implementation's outputs."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from helpers import FIXTURES, PARITY_CLEAR_SLACK, compare_results, run_script, write_cfg
from utils.io import atomic_write_png

CASE = FIXTURES / "parity_case1"


@pytest.mark.e2e
def test_parity_case_matches_published_outputs(tmp_path, parity_weights):
    workspace = tmp_path / "workspace"
    shutil.copytree(CASE / "workspace", workspace)
    cfg = write_cfg(tmp_path / "parity.yaml", workspace / "parity_clip")
    out = tmp_path / "out"
    run = run_script(
        "test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", out, "--mem_every", "1", "--max_memory", "3"
    )
    assert run.returncode == 0, run.stderr
    run = run_script("ensemble.py", "--predroot", out, "--dataroot", workspace)
    assert run.returncode == 0, run.stderr
    problems = compare_results(CASE / "expected" / "parity_clip_mem1", out / "parity_clip_mem1", PARITY_CLEAR_SLACK)
    assert problems == []
    assert len(list((out / "parity_clip_mem1" / "envis").glob("*.png"))) == 16


@pytest.mark.unit
@pytest.mark.parametrize("damage", ["probabilities", "labels", "label values", "two labels", "conf"])
def test_the_comparison_fails_on_a_damaged_result(tmp_path, damage):
    """Negative control: the comparison above is not blind. The published outputs compared with
    themselves pass; each kind of damage is caught."""
    expected = CASE / "expected" / "parity_clip_mem1"
    assert compare_results(expected, expected, PARITY_CLEAR_SLACK) == []
    damaged = tmp_path / "damaged"
    shutil.copytree(expected, damaged)
    if damage == "probabilities":
        png = damaged / "part1" / "00003_tri.png"
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        atomic_write_png(png, np.roll(image, 5, axis=1))
    elif damage == "two labels":  # just beyond the tolerated rounding noise of one label per frame
        png = damaged / "ensemble" / "00003_trimap.png"
        labels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        labels[0, :2] = np.where(labels[0, :2] == 0, 255, 0)
        atomic_write_png(png, labels)
    elif damage in ("labels", "label values"):
        png = damaged / "ensemble" / "00003_trimap.png"
        labels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        atomic_write_png(png, 255 - labels if damage == "labels" else np.where(labels == 128, 127, labels))
    else:
        conf = json.loads((damaged / "conf.json").read_text())
        conf[0][next(iter(conf[0]))] = 0.5
        (damaged / "conf.json").write_text(json.dumps(conf))
    assert compare_results(expected, damaged, PARITY_CLEAR_SLACK) != []
