"""tgm.py matte: alpha mattes from trimaps, composites, bad frames; and the alpha metrics."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dataset.trimap import alpha_to_trimap, decode_trimap
from evaluation.alpha import frame_metrics, pair_metrics, score_alphas
from helpers import run_main, run_script
from matting.solve import Solver
from utils.exr import read_exr, srgb_to_linear
from utils.io import atomic_write_png


def synthetic(size: int = 48, shift: float = 0.0, seed: int = 0):
    """A smooth foreground over a smooth background through a soft disc matte: (RGB in [0, 1],
    alpha, labels of the trimap that marks 0 < alpha < 1 widened by 5 px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64) / size
    fg = np.dstack([0.8 + 0.1 * xx, 0.25 + 0.1 * yy, 0.2 + 0.0 * xx])
    bg = np.dstack([0.1 + 0.1 * yy, 0.3 + 0.2 * xx, 0.85 - 0.1 * xx])
    radius = np.hypot(yy - 0.5, xx - 0.5 - shift)
    alpha = np.clip((0.3 - radius) / 0.08 + 0.5, 0, 1)
    image = np.clip(fg * alpha[..., None] + bg * (1 - alpha[..., None]) + rng.normal(0, 0.002, fg.shape), 0, 1)
    return image, alpha, decode_trimap(alpha_to_trimap(alpha, 5))


@pytest.mark.unit
def test_closed_form_matting_recovers_a_known_matte():
    image, alpha, labels = synthetic()
    estimate = Solver("cf").alpha(image, labels)
    unknown = labels == 1
    assert np.abs(estimate - alpha)[unknown].mean() < 0.02  # the stated error: README, Matting
    assert np.abs(estimate - alpha).max() < 0.15
    assert (estimate[labels == 2] == 1).all() and (estimate[labels == 0] == 0).all()


@pytest.mark.unit
def test_starting_from_the_previous_alpha_gives_the_same_matte():
    image, _, labels = synthetic(shift=0.03)
    previous = Solver("cf").alpha(*synthetic()[::2])
    cold, warm = Solver("cf").alpha(image, labels), Solver("cf").alpha(image, labels, start=previous)
    assert np.abs(cold - warm).max() < 1e-3


@pytest.mark.unit
def test_alpha_metrics_on_hand_computed_arrays():
    alpha = np.array([[0.0, 0.5], [1.0, 0.25]])
    truth = np.array([[0.0, 0.25], [1.0, 0.75]])
    region = np.array([[False, True], [False, True]])
    scores = frame_metrics(alpha, truth, region)
    assert scores["SAD"] == pytest.approx(0.75 / 1e3)  # |0.25| + |-0.5|
    assert scores["mSAD"] == pytest.approx(0.375 * 1e3)
    assert scores["MSE"] == pytest.approx((0.0625 + 0.25) / 2 * 1e3)
    assert scores["SSDA"] == pytest.approx(np.sqrt(0.3125))
    flat = frame_metrics(np.full((8, 8), 0.3), np.full((8, 8), 0.7), np.ones((8, 8), bool))
    assert flat["Grad"] == pytest.approx(0.0)  # equal (zero) gradients
    # dtSSD: (a0 - a1) - (g0 - g1) = (0.5 - 0.2) - (0.25 - 0.25) = 0.3 and (0.25 - 0.25) - (0.75 - 0.5) = -0.25
    later_alpha = np.array([[0.0, 0.2], [1.0, 0.25]])
    later_truth = np.array([[0.0, 0.25], [1.0, 0.5]])
    zero_flow = np.zeros((2, 2, 2), np.float32)
    pair = pair_metrics((alpha, later_alpha), (truth, later_truth), region, zero_flow)
    assert pair["dtSSD"] == pytest.approx(np.sqrt(0.3**2 + 0.25**2))
    # MESSDdt with no motion: |0.25^2 - 0.05^2| + |0.5^2 - 0.25^2|
    assert pair["MESSDdt"] == pytest.approx(abs(0.0625 - 0.0025) + abs(0.25 - 0.0625), rel=1e-6)


@pytest.mark.unit
def test_a_gradient_error_where_the_edges_differ():
    truth = np.zeros((16, 16))
    truth[:, 8:] = 1
    blurred = cv2.GaussianBlur(truth, (0, 0), 2)
    assert frame_metrics(blurred, truth, np.ones((16, 16), bool))["Grad"] > 0


@pytest.mark.unit
def test_perfect_mattes_score_zero_and_pairs_skip_gaps():
    alphas = [synthetic(shift=s)[1] for s in (0.0, 0.02, 0.04)]
    regions = [synthetic(shift=s)[2] == 1 for s in (0.0, 0.02, 0.04)]
    scores = score_alphas(alphas, alphas, regions, ["a", "b", "c"], positions=[0, 1, 3])
    assert all(v == 0 for k, v in scores.unknown.items() if v is not None)
    assert scores.unknown["dtSSD"] == 0 and scores.unknown["MESSDdt"] is None  # no frames: no flow


@pytest.fixture
def clip(tmp_path):
    """3 frames with trimaps; frame 00001's trimap has no foreground and no background."""
    frames, trimaps = tmp_path / "clip", tmp_path / "trimaps"
    frames.mkdir()
    trimaps.mkdir()
    for i in range(3):
        image, alpha, labels = synthetic(shift=0.02 * i, seed=i)
        atomic_write_png(frames / f"{i:05d}_rgb.png", np.round(image[..., ::-1] * 255).astype(np.uint8))
        if i == 1:
            labels[:] = 1  # all unknown: nothing to matte from (one known side would be answered: test_video.py)
        atomic_write_png(trimaps / f"{i:05d}_trimap.png", np.array([0, 128, 255], np.uint8)[labels])
        atomic_write_png(tmp_path / f"{i:05d}_alpha.png", np.round(alpha * 255).astype(np.uint8))
    return tmp_path


@pytest.mark.cli
def test_a_broken_trimap_is_reported_and_the_other_frames_are_matted(clip):
    run = run_main("tgm.py", "matte", "--trimaps", clip / "trimaps", "--frames_dir", clip / "clip", "--out", clip / "m",
                   "--background", "green")  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "frame 00001: the trimap has no foreground and no background" in run.stderr
    assert "Traceback" not in run.stderr
    for stem in ("00000", "00002"):
        alpha = cv2.imread(str(clip / "m" / f"{stem}_alpha.png"), cv2.IMREAD_UNCHANGED)
        fg = cv2.imread(str(clip / "m" / f"{stem}_fg.png"), cv2.IMREAD_UNCHANGED)
        comp = cv2.imread(str(clip / "m" / f"{stem}_comp.png"), cv2.IMREAD_UNCHANGED)
        assert alpha.dtype == np.uint8 and fg.shape == (48, 48, 4) and np.array_equal(fg[..., 3], alpha)
        frame = cv2.imread(str(clip / "clip" / f"{stem}_rgb.png"))
        labels = decode_trimap(cv2.imread(str(clip / "trimaps" / f"{stem}_trimap.png"), cv2.IMREAD_GRAYSCALE))
        # the composite keeps the frame where it is surely foreground and shows the new background elsewhere
        assert np.abs(comp[labels == 2].astype(int) - frame[labels == 2]).max() <= 2
        assert (comp[labels == 0] == (64, 177, 0)).all()  # green, BGR
    assert not (clip / "m" / "00001_alpha.png").exists()


@pytest.mark.cli
def test_matte_with_exr_writes_each_frames_matte_and_premultiplied_linear_foreground(clip):
    import OpenEXR

    run = run_main("tgm.py", "matte", "--trimaps", clip / "trimaps", "--frames_dir", clip / "clip", "--out", clip / "m",
                   "--exr", "zip")  # fmt: skip
    assert run.returncode == 1, run.stderr  # frame 00001 has nothing to matte from (the test above)
    for stem in ("00000", "00002"):
        alpha = cv2.imread(str(clip / "m" / f"{stem}_alpha.png"), cv2.IMREAD_UNCHANGED) / 255.0
        fg = cv2.imread(str(clip / "m" / f"{stem}_fg.png"), cv2.IMREAD_UNCHANGED)[..., 2::-1] / 255.0  # RGB
        header, channels = read_exr(clip / "m" / f"{stem}_alpha.exr")
        # the PNGs are rounded to 8 bits, the EXRs are half floats of the unrounded values
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION and np.abs(channels["A"] - alpha).max() < 2.5e-3
        header, channels = read_exr(clip / "m" / f"{stem}_fg.exr")
        rgba = channels["RGBA"].astype(float)
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION and np.abs(rgba[..., 3] - alpha).max() < 2.5e-3
        # linear light, premultiplied: what the straight sRGB PNG holds, linearised and times alpha
        assert np.abs(rgba[..., :3] - srgb_to_linear(fg) * alpha[..., None]).max() < 6e-3
    assert not (clip / "m" / "00001_alpha.exr").exists()


@pytest.mark.e2e
def test_matting_resumes_and_workers_change_no_byte(clip):
    (clip / "trimaps" / "00001_trimap.png").unlink()
    one = run_main(
        "tgm.py",
        "matte",
        "--trimaps",
        clip / "trimaps",
        "--frames_dir",
        clip / "clip",
        "--out",
        clip / "one",
        "--alpha16",
    )
    assert one.returncode == 0, one.stderr
    assert cv2.imread(str(clip / "one" / "00000_alpha.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    again = run_main(
        "tgm.py",
        "matte",
        "--trimaps",
        clip / "trimaps",
        "--frames_dir",
        clip / "clip",
        "--out",
        clip / "one",
        "--alpha16",
    )
    assert "0 frames matted" in again.stderr and "2 skipped" in again.stderr
    two = run_script(
        "tgm.py",
        "matte",
        "--trimaps",
        clip / "trimaps",
        "--frames_dir",
        clip / "clip",
        "--out",
        clip / "two",
        "--alpha16",
        "--workers",
        "2",
    )
    assert two.returncode == 0, two.stderr
    for name in ("00000_alpha.png", "00002_fg.png"):
        assert (clip / "one" / name).read_bytes() == (clip / "two" / name).read_bytes()


@pytest.mark.cli
def test_evaluate_scores_alpha_mattes_with_their_scaling(clip):
    (clip / "trimaps" / "00001_trimap.png").unlink()
    run_main("tgm.py", "matte", "--trimaps", clip / "trimaps", "--frames_dir", clip / "clip", "--out", clip / "m")
    run = run_main(
        "tgm.py",
        "evaluate",
        "--pred",
        clip / "m",
        "--gt",
        clip,
        "--band_diameter",
        "5",
        "--frames_dir",
        clip / "clip",
        "--json",
        clip / "s.json",
    )
    assert run.returncode == 0, run.stderr
    assert "mSAD" in run.stdout and "scaling:" in run.stdout
    scores = json.loads((clip / "s.json").read_text())
    assert scores["frames"] == 2 and scores["scaling"]["MSE"].startswith("mean (a - g)^2 x 1e3")
    assert 0 < scores["unknown"]["mSAD"] < 20  # under 0.02 mean error inside the band
    assert scores["unknown"]["dtSSD"] is None  # frames 0 and 2 are not neighbours
    # the band holds the errors: the sum over all pixels is at least the band's, the mean lower
    assert (
        scores["overall"]["SAD"] >= scores["unknown"]["SAD"] and scores["overall"]["mSAD"] < scores["unknown"]["mSAD"]
    )
