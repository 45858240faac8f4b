"""Reruns after a keyframe was added, redrawn or removed compute only the parts whose inputs changed,
and give the bytes of a full run into an empty folder."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from helpers import run_main, write_cfg
from inference.layout import ResultFolder
from inference.options import PropagationOptions
from pipeline.clip import run_clip
from utils.io import atomic_write_png

CPU = torch.device("cpu")


@pytest.fixture
def clip(tmp_path):
    """12 frames, keyframes 0, 5 and 11 (ground truth for every frame in gt/)."""
    return make_synthetic_clip(tmp_path / "ws", "clip", num_frames=12, size=(40, 56), keyframes=(0, 5, 11), seed=6,
                               gt_root=tmp_path / "gt")  # fmt: skip


def propagate(tmp_path, clip, save, **options):
    """(parts reused, parts computed) of test_mf_2.py's chain, in this process (fast)."""
    run = run_clip(
        scan_clip(clip.folder), save, PropagationOptions(**options), CPU, checkpoint=tmp_path.parent / "weights.pth",
        fuse=False,
    )  # fmt: skip
    return len(run.reused), len(run.computed)


@pytest.mark.e2e
def test_the_script_says_what_it_reused(tmp_path, clip):
    cfg = write_cfg(tmp_path / "c.yaml", clip.folder)
    flags = ["--cfg", cfg, "--load", tmp_path.parent / "weights.pth", "--save", tmp_path / "out"]
    for expected in ("0 reused, 4 to compute", "4 reused, 0 to compute"):
        run = run_main("test_mf_2.py", *flags)
        assert run.returncode == 0 and expected in run.stderr, run.stderr
    run = run_main("test_mf_2.py", *flags, "--recompute")
    assert run.returncode == 0 and "0 reused, 4 to compute" in run.stderr, run.stderr


@pytest.fixture(autouse=True)
def weights(tmp_path, parity_weights):
    shutil.copy(parity_weights, tmp_path.parent / "weights.pth")


def folder_bytes(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }  # .lock: the writer's lock


def add_keyframe(clip, gt, stem):
    shutil.copy(gt / "clip" / f"{stem}_trimap.png", clip.folder / f"{stem}_trimap.png")


@pytest.mark.e2e
def test_adding_a_keyframe_recomputes_only_the_parts_it_touches(tmp_path, clip):
    save = tmp_path / "incremental"
    assert propagate(tmp_path, clip, save) == (0, 4)
    assert propagate(tmp_path, clip, save) == (4, 0), "nothing changed: everything is reused"
    add_keyframe(clip, tmp_path / "gt", "00008")  # splits the last interval: its 2 parts become 4
    assert propagate(tmp_path, clip, save) == (2, 4)
    assert propagate(tmp_path, clip, tmp_path / "full") == (0, 6)
    incremental, full = folder_bytes(save / "clip_mem5"), folder_bytes(tmp_path / "full" / "clip_mem5")
    assert incremental.keys() == full.keys() and len(full) == 6 + 1 + 22  # records, conf.json, PNGs
    assert incremental == full, "the incremental run must give the bytes of a full run"


@pytest.mark.e2e
def test_redrawing_and_removing_a_keyframe(tmp_path, clip):
    save = tmp_path / "out"
    assert propagate(tmp_path, clip, save) == (0, 4)
    trimap = cv2.imread(str(clip.folder / "00005_trimap.png"), cv2.IMREAD_GRAYSCALE)
    trimap[:5] = 0  # a correction at the top of keyframe 5
    atomic_write_png(clip.folder / "00005_trimap.png", trimap)
    assert propagate(tmp_path, clip, save) == (0, 4), "every part holds keyframe 5 or 0..11 around it"
    (clip.folder / "00011_trimap.png").unlink()  # the tail 5..11 replaces the parts between 5 and 11
    assert propagate(tmp_path, clip, save) == (2, 1)
    assert propagate(tmp_path, clip, tmp_path / "full") == (0, 3)
    assert folder_bytes(save / "clip_mem5") == folder_bytes(tmp_path / "full" / "clip_mem5")


@pytest.mark.e2e
def test_options_and_weights_are_inputs_and_recompute_forces_a_full_run(tmp_path, clip):
    save = tmp_path / "out"
    assert propagate(tmp_path, clip, save) == (0, 4)
    assert propagate(tmp_path, clip, save, max_memory=2) == (0, 4)
    assert propagate(tmp_path, clip, save, max_memory=2, recompute=True) == (0, 4)
    assert propagate(tmp_path, clip, save, max_memory=2) == (4, 0)
    assert propagate(tmp_path, clip, save, max_memory=2, n_threads=0) == (4, 0), "I/O is no input"
    state = torch.load(tmp_path.parent / "weights.pth")
    state["Decoder.pred2.bias"] += 0.01
    torch.save(state, tmp_path.parent / "weights.pth")
    assert propagate(tmp_path, clip, save, max_memory=2) == (0, 4)


@pytest.mark.e2e
def test_changed_parts_remove_the_stale_fusion(tmp_path, clip):
    save = tmp_path / "out"
    propagate(tmp_path, clip, save)
    fuse = run_main("ensemble.py", "--predroot", save, "--dataroot", clip.folder.parent)
    assert fuse.returncode == 0, fuse.stderr
    result = ResultFolder(save / "clip_mem5")
    assert result.is_fused(clip.stems)
    propagate(tmp_path, clip, save)  # nothing changed: the fusion still describes the parts
    assert result.is_fused(clip.stems)
    add_keyframe(clip, tmp_path / "gt", "00008")
    propagate(tmp_path, clip, save)
    assert not result.ensemble_dir.exists() and not result.uncertainty_json.exists()


@pytest.mark.e2e
def test_an_interrupted_arrangement_is_picked_up(tmp_path, clip):
    save = tmp_path / "out"
    propagate(tmp_path, clip, save)
    result = ResultFolder(save / "clip_mem5")
    # as if a run had stopped after moving a finished part aside to adopt it
    fingerprint = json.loads(result.part_record(3).read_text())["fingerprint"]
    result.part_dir(3).rename(result.path / f".reuse-{fingerprint}")
    (result.part_dir(2) / "00006_tri.png").unlink()  # and a part that lost a PNG is not reused
    assert propagate(tmp_path, clip, save) == (3, 1)
    assert not list(result.path.glob(".reuse-*"))
    assert sorted(p.name for p in result.path.iterdir() if p.name != ".lock") == [
        "conf.json",
        "part0",
        "part1",
        "part2",
        "part3",
    ]
    np.testing.assert_array_equal(cv2.imread(str(result.part_png(2, "00006")), cv2.IMREAD_UNCHANGED).shape, (40, 56, 3))
