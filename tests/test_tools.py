"""tgm.py evaluate, extract, overlay and the demo."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dataset.trimap import alpha_to_trimap, encode_labels
from evaluation.metrics import confusion, iou_from_confusion, score_sequence
from helpers import run_script
from utils.io import atomic_write_png


@pytest.mark.unit
def test_scores_of_a_perfect_prediction():
    truth = np.array([[0, 1, 2, 2]], np.uint8)
    scores = score_sequence([truth, truth], [truth, truth], ["a", "b"])
    assert scores.miou == 1.0 and scores.accuracy == 1.0 and scores.unknown_recall == 1.0 and scores.flicker == 0.0


@pytest.mark.unit
def test_iou_counts_and_unknown_recall():
    truth = np.array([[0, 0, 1, 1, 2, 2]], np.uint8)
    pred = np.array([[0, 1, 1, 2, 2, 2]], np.uint8)
    counts = confusion(pred, truth)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert iou_from_confusion(counts).tolist() == pytest.approx([1 / 2, 1 / 3, 2 / 3])
    scores = score_sequence([pred], [truth], ["a"])
    assert scores.unknown_recall == 0.5
    assert scores.accuracy == pytest.approx(4 / 6)


@pytest.mark.unit
def test_flicker_counts_label_changes_the_truth_does_not_have():
    truth = [np.zeros((1, 4), np.uint8)] * 3
    preds = [np.array([[0, 0, 0, 0]]), np.array([[1, 0, 0, 0]]), np.array([[1, 0, 0, 0]])]
    preds = [p.astype(np.uint8) for p in preds]
    assert score_sequence(preds, truth, "abc").flicker == pytest.approx(1 / 8)
    moving = [np.array([[0, 0, 0, 0]]), np.array([[1, 0, 0, 0]]), np.array([[1, 0, 0, 0]])]
    moving = [m.astype(np.uint8) for m in moving]
    assert score_sequence(preds, moving, "abc").flicker == 0.0  # the truth changed there too


@pytest.mark.unit
def test_flicker_pairs_only_frames_that_are_neighbours_in_the_clip():
    truth = [np.zeros((1, 4), np.uint8)] * 3
    preds = [np.array([[0, 0, 0, 0]], np.uint8), np.array([[1, 0, 0, 0]], np.uint8), np.array([[1, 1, 0, 0]], np.uint8)]
    assert score_sequence(preds, truth, "abc", positions=[0, 1, 2]).flicker == pytest.approx(2 / 8)
    assert score_sequence(preds, truth, "abc", positions=[0, 2, 3]).flicker == pytest.approx(1 / 4)  # 2-3 only
    assert score_sequence(preds, truth, "abc", positions=[0, 2, 4]).flicker == 0.0


@pytest.mark.unit
def test_alpha_to_trimap_marks_the_soft_band_unknown():
    alpha = np.zeros((9, 9), np.uint8)
    alpha[:, 5:] = 255
    alpha[:, 4] = 100
    assert alpha_to_trimap(alpha, 0)[0].tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255]
    assert alpha_to_trimap(alpha, 3)[0].tolist() == [0, 0, 0, 128, 128, 128, 255, 255, 255]


def write_labels(folder, stem, labels):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_png(folder / f"{stem}_trimap.png", encode_labels(labels))


@pytest.mark.e2e
def test_evaluate_script_against_trimaps_and_alphas(tmp_path):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    truth[3:5, 3:5] = 2
    pred = truth.copy()
    pred[0, 0] = 1
    for stem in ("000", "001", "002"):
        write_labels(tmp_path / "pred", stem, pred)
        write_labels(tmp_path / "gt", stem, truth)
    clip = tmp_path / "clip"
    write_labels(clip, "000", truth)  # a keyframe: left out with --skip_keyframes
    run = run_script("tgm.py", "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt",
                     "--skip_keyframes", clip, "--json", tmp_path / "s.json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "mIoU" in run.stdout
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["frames"] == 2 and sorted(scores["per_frame_miou"]) == ["001", "002"]
    assert scores["accuracy"] == pytest.approx(63 / 64)

    alphas = tmp_path / "alpha"
    alphas.mkdir()
    alpha = np.where(truth == 2, 255, np.where(truth == 1, 128, 0)).astype(np.uint8)
    for stem in ("000", "001", "002"):
        atomic_write_png(alphas / f"{stem}_alpha.png", alpha)
    run = run_script("tgm.py", "evaluate", "--pred", tmp_path / "pred", "--gt", alphas, "--band_diameter", "0",
                     "--json", tmp_path / "a.json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    scores = json.loads((tmp_path / "a.json").read_text())
    # alpha 128 -> unknown, 255 -> foreground, 0 -> background: the truth above, so the same scores
    assert scores["frames"] == 3 and scores["accuracy"] == pytest.approx(63 / 64)
    assert scores["iou"] == pytest.approx([47 / 48, 12 / 13, 1.0])


@pytest.mark.e2e
def test_evaluate_script_flicker_skips_pairs_across_left_out_keyframes(tmp_path):
    truth = np.zeros((4, 4), np.uint8)
    labels = {"000": 0, "001": 1, "002": 0, "003": 1}  # the prediction flips every frame
    for stem, value in labels.items():
        write_labels(tmp_path / "pred", stem, np.full((4, 4), value, np.uint8))
        write_labels(tmp_path / "gt", stem, truth)
    write_labels(tmp_path / "clip", "001", truth)  # keyframe 001 is left out: pairs 002-003 remain
    run = run_script("tgm.py", "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt",
                     "--skip_keyframes", tmp_path / "clip", "--json", tmp_path / "s.json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "s.json").read_text())["flicker"] == 1.0  # 002 -> 003 flips all pixels


@pytest.mark.e2e
def test_video_extract_and_overlay(tmp_path):
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    for t in range(7):
        writer.write(np.full((60, 80, 3), 30 * t, np.uint8))
    writer.release()
    clip = tmp_path / "ws" / "clip"
    run = run_script("tgm.py", "extract", video, "--out", clip, "--every", "2", "--max_edge", "40")
    assert run.returncode == 0, run.stderr
    frames = sorted(p.name for p in clip.glob("*_rgb.png"))
    assert frames == ["00000_rgb.png", "00002_rgb.png", "00004_rgb.png", "00006_rgb.png"]
    assert cv2.imread(str(clip / frames[0])).shape == (30, 40, 3)
    again = run_script("tgm.py", "extract", video, "--out", clip)
    assert again.returncode == 2 and "already holds frames" in again.stderr

    result = tmp_path / "results" / "clip_mem5"
    for name in frames:
        write_labels(result / "ensemble", name[:5], np.ones((30, 40), np.uint8))
    run = run_script("tgm.py", "overlay", "--result", result, "--dataroot", tmp_path / "ws", "--fps", "5")
    assert run.returncode == 0, run.stderr
    capture = cv2.VideoCapture(str(result / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4
