"""The demo: its wiring on a quick variant (every run of the suite), and its table's claims on the full demo as
the README's Quick start runs it (minutes, README.md says how long; marked slow: `pytest -m slow`, which .ci/run
runs too)."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from helpers import run_script

pytestmark = pytest.mark.e2e

QUICK_FRAMES = 8
FULL_FRAMES = 16


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The full demo, exactly as the README's first command runs it (but into a temporary folder)."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    run = run_script("demo.py", "--out", out, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """The same steps on a small clip with two finetuning steps (seconds): the wiring, not the scores."""
    out = tmp_path_factory.mktemp("quick_demo") / "demo_out"
    run = run_script("demo.py", "--out", out, "--frames", QUICK_FRAMES, "--size", "64x112", "--steps", 2, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_the_quick_demo_writes_every_score_table(quick_demo):
    out, run = quick_demo
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["trimap"]) == {"untrained network", "copy nearest keyframe", "finetuned network"}
    assert set(metrics["alpha"]) == {"ground-truth trimaps", "copy nearest keyframe", "finetuned network"}
    assert all(0 <= row["miou"] <= 1 for row in metrics["trimap"].values())
    assert "scaling:" in run.stdout and "finetuned network mIoU" in run.stderr
    matte = out / "results" / "sample_mem5" / "matte"
    assert len(list(matte.glob("*_comp.png"))) == len(list(matte.glob("*_fg.png"))) == QUICK_FRAMES


def test_the_quick_demo_writes_its_pictures(quick_demo):
    assert_pictures(quick_demo[0], QUICK_FRAMES, min_sheet_height=100)  # its frames are 64 px high


@pytest.mark.slow
def test_the_finetuned_network_beats_both_baselines(demo):
    out, run = demo
    scores = json.loads((out / "metrics.json").read_text())["trimap"]
    assert set(scores) >= {"untrained network", "copy nearest keyframe", "finetuned network"}
    finetuned = scores["finetuned network"]["miou"]
    assert finetuned > scores["untrained network"]["miou"] + 0.2
    assert finetuned > scores["copy nearest keyframe"]["miou"] + 0.1
    assert "NOT better" not in run.stderr


@pytest.mark.slow
def test_the_demo_ends_with_mattes_and_composites(demo):
    out, run = demo
    alpha = json.loads((out / "metrics.json").read_text())["alpha"]
    assert set(alpha) == {"ground-truth trimaps", "copy nearest keyframe", "finetuned network"}
    band = {name: scores["unknown"]["mSAD"] for name, scores in alpha.items()}
    # better trimaps give better mattes: ground truth first, the propagated ones before the copies
    assert band["ground-truth trimaps"] < band["finetuned network"] < band["copy nearest keyframe"]
    assert "scaling:" in run.stdout and alpha["finetuned network"]["scaling"]["mSAD"].startswith("mean |a - g| x 1e3")
    matte = out / "results" / "sample_mem5" / "matte"
    assert len(list(matte.glob("*_comp.png"))) == len(list(matte.glob("*_fg.png"))) == 16


@pytest.mark.slow
def test_the_demo_writes_its_pictures(demo):
    assert_pictures(demo[0], FULL_FRAMES, min_sheet_height=300)


def assert_pictures(out, frames: int, min_sheet_height: int) -> None:
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > min_sheet_height
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == frames
    # the foreground video keeps the matte: its alpha is the alpha PNGs', within a level
    matte = out / "results" / "sample_mem5" / "matte"
    with av.open(str(out / "foreground.mov")) as container:
        decoded = [frame.to_ndarray(format="rgba") for frame in container.decode(video=0)]
    assert len(decoded) == frames
    for stem, frame in zip(sorted(p.name[:5] for p in matte.glob("*_alpha.png")), decoded):
        alpha = cv2.imread(str(matte / f"{stem}_alpha.png"), cv2.IMREAD_GRAYSCALE)
        assert np.abs(frame[..., 3].astype(int) - alpha).max() <= 1, stem
