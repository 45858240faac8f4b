"""Where propagation drifts: per-frame disagreement scores, suggestions, uncertainty.json/png."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import run_main
from inference.uncertainty import frame_score, soft_miou_distance, suggest
from utils.io import atomic_write_png


def probs(labels: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    """H x W x 3 probabilities putting ``confidence`` on the label, the rest spread evenly."""
    out = np.full((*labels.shape, 3), (1 - confidence) / 2, np.float32)
    np.put_along_axis(out, labels[..., None].astype(np.int64), confidence, axis=2)
    return out


def trimap_labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 8 + shift : 22 + shift] = 1
    labels[8:12, 11 + shift : 19 + shift] = 2
    return labels


EVEN = [0.5, 0.5]


@pytest.mark.unit
def test_agreeing_passes_score_zero_and_disagreement_raises_the_score():
    same = probs(trimap_labels())
    assert frame_score([same, same], EVEN) == 0.0
    slightly = frame_score([same, probs(trimap_labels(1))], EVEN)
    badly = frame_score([same, probs(trimap_labels(5))], EVEN)
    assert 0 < slightly < badly <= 1


@pytest.mark.unit
def test_a_pass_the_ensemble_hardly_trusts_counts_little():
    near, far = probs(trimap_labels()), probs(trimap_labels(5))
    assert frame_score([near, far], [0.9, 0.1]) < 0.5 * frame_score([near, far], EVEN)


@pytest.mark.unit
def test_the_score_weighs_the_small_classes_like_the_large_one():
    truth = trimap_labels()
    wrong_fg = truth.copy()
    wrong_fg[8:12, 11:19] = 1  # the foreground (32 px) lost
    wrong_bg = truth.copy()
    wrong_bg[0:2, 0:16] = 1  # 32 px of the background (372 px) marked unknown
    assert frame_score([probs(truth), probs(wrong_fg)], EVEN) > 3 * frame_score([probs(truth), probs(wrong_bg)], EVEN)


@pytest.mark.unit
def test_a_single_pass_scores_its_own_doubt():
    labels = trimap_labels()
    assert frame_score([probs(labels)], [1.0]) == 0.0
    assert 0 < frame_score([probs(labels, 0.9)], [1.0]) < frame_score([probs(labels, 0.5)], [0.4])
    assert soft_miou_distance(probs(labels), probs(labels)) == 0.0


@pytest.mark.unit
def test_suggestions_are_ranked_and_spread_out():
    order = [f"{i:03d}" for i in range(40)]
    keyframes = ["000", "039"]
    scores = {s: 0.01 for s in order if s not in keyframes}
    for i, value in [(20, 0.9), (19, 0.85), (21, 0.8), (22, 0.7), (8, 0.5), (9, 0.45), (33, 0.3)]:
        scores[order[i]] = value
    chosen = suggest(scores, order, keyframes, count=4)
    assert chosen[0] in ("020", "021") and chosen[1] in ("008", "009")  # the broad peak first, then the next
    positions = [order.index(s) for s in chosen]
    radius = max(1, len(order) // 10)
    assert all(abs(a - b) > radius for i, a in enumerate(positions) for b in positions[i + 1 :])
    assert suggest({s: 0.0 for s in scores}, order, keyframes) == [], "nothing to suggest where all agree"


@pytest.mark.unit
def test_the_most_useful_frame_is_in_the_middle_of_a_drift_not_at_its_end():
    order = [f"{i:03d}" for i in range(16)]
    keyframes = ["000", "009"]
    scores = {s: 0.3 for s in order if s not in keyframes}
    scores["015"] = 0.35  # the last frame doubts a little more, but a keyframe there helps few frames
    chosen = suggest(scores, order, keyframes)
    assert chosen[0] in ("011", "012", "013")  # the tail 10-15 is the longest stretch without a keyframe
    assert chosen[1] in ("003", "004", "005", "006")


def make_result(tmp_path, disagree: dict[str, int]):
    """A result of 9 frames, keyframes 00000 and 00008: forward and backward parts whose frames
    agree except where ``disagree`` shifts the backward prediction."""
    result = tmp_path / "res" / "clip_mem5"
    stems = [f"{i:05d}" for i in range(9)]
    forward, backward = stems[:8], stems[:0:-1]
    conf = [{s: 1 - i / 8 for i, s in enumerate(forward)}, {s: 1 - i / 8 for i, s in enumerate(backward)}]
    result.mkdir(parents=True)
    (result / "conf.json").write_text(json.dumps(conf))
    for k, part in enumerate((forward, backward)):
        (result / f"part{k}").mkdir()
        for stem in part:
            shift = disagree.get(stem, 0) if k == 1 else 0
            atomic_write_png(
                result / f"part{k}" / f"{stem}_tri.png", (probs(trimap_labels(shift)) * 255).astype(np.uint8)
            )
    return result


@pytest.mark.e2e
def test_ensemble_writes_the_scores_the_suggestions_and_the_plot(tmp_path):
    result = make_result(tmp_path, {"00003": 2, "00004": 6})  # weights: 00003 0.625/0.375, 00004 0.5/0.5
    run = run_main("ensemble.py", "--predroot", result.parent)
    assert run.returncode == 0, run.stderr
    assert "annotate next: 0000" in run.stdout
    written = json.loads((result / "uncertainty.json").read_text())
    assert sorted(written["frames"]) == [f"{i:05d}" for i in range(1, 8)], "keyframes have no score"
    frames = written["frames"]
    assert frames["00004"] > frames["00003"] > frames["00002"] == 0
    # 00003 is next to 00004 (within the radius of 1 frame for 9 frames): it is not suggested next
    assert written["suggested"][0] in ("00003", "00004") and written["keyframes"] == ["00000", "00008"]
    assert "00002" not in written["suggested"]
    plot = cv2.imread(str(result / "uncertainty.png"))
    assert plot is not None and plot.shape[1] >= 480
    # the suggested frames are marked in red on the plot
    red = (plot[..., 2] > 200) & (plot[..., 1] < 80) & (plot[..., 0] < 80)
    assert red.sum() > 50


@pytest.mark.e2e
@pytest.mark.parametrize("stems", [["00000"], ["00004"]])
def test_head_and_tail_frames_get_the_single_pass_score(tmp_path, stems):
    result = tmp_path / "r" / "c_mem5"
    part = [f"{i:05d}" for i in range(5)] if stems == ["00000"] else [f"{i:05d}" for i in range(4, -1, -1)]
    result.mkdir(parents=True)
    (result / "conf.json").write_text(json.dumps([{s: 1 - i / 5 for i, s in enumerate(part)}]))
    (result / "part0").mkdir()
    for i, stem in enumerate(part):
        atomic_write_png(
            result / "part0" / f"{stem}_tri.png", (probs(trimap_labels(), 1 - 0.1 * i) * 255).astype(np.uint8)
        )
    run = run_main("ensemble.py", "--predroot", result.parent)
    assert run.returncode == 0, run.stderr
    frames = json.loads((result / "uncertainty.json").read_text())["frames"]
    scores = [frames[s] for s in part[1:]]
    assert scores == sorted(scores) and scores[0] > 0, "doubt grows with the distance from the keyframe"
