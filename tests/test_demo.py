"""The demo as the README's Quick start runs it (about 4 minutes): its table's claims hold."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from helpers import run_script

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    run = run_script("demo.py", "--out", out, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_the_finetuned_network_beats_both_baselines(demo):
    out, run = demo
    scores = json.loads((out / "metrics.json").read_text())["trimap"]
    assert set(scores) >= {"untrained network", "copy nearest keyframe", "finetuned network"}
    finetuned = scores["finetuned network"]["miou"]
    assert finetuned > scores["untrained network"]["miou"] + 0.2
    assert finetuned > scores["copy nearest keyframe"]["miou"] + 0.1
    assert "NOT better" not in run.stderr


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


def test_the_demo_writes_its_pictures(demo):
    out, _ = demo
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 300
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 16
    # the foreground video keeps the matte: its alpha is the alpha PNGs', within a level
    matte = out / "results" / "sample_mem5" / "matte"
    with av.open(str(out / "foreground.mov")) as container:
        decoded = [frame.to_ndarray(format="rgba") for frame in container.decode(video=0)]
    assert len(decoded) == 16
    for stem, frame in zip(sorted(p.name[:5] for p in matte.glob("*_alpha.png")), decoded):
        alpha = cv2.imread(str(matte / f"{stem}_alpha.png"), cv2.IMREAD_GRAYSCALE)
        assert np.abs(frame[..., 3].astype(int) - alpha).max() <= 1, stem
