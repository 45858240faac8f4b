"""torchrun: parts and clips shared out among ranks (gloo on the CPU), VideoMatting108 import."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dataset.synthetic import make_synthetic_clip
from helpers import ONE_STEP_FINETUNE_YAML, run_script, run_torchrun, write_cfg
from utils.distributed import share_by_load
from utils.io import atomic_write_png


@pytest.mark.unit
def test_share_by_load_balances_and_covers_everything():
    loads = [5, 4, 3, 3, 1]
    shares = share_by_load(loads, 2)
    assert sorted(i for share in shares for i in share) == [0, 1, 2, 3, 4]
    assert [sum(loads[i] for i in share) for share in shares] == [8, 8]
    assert shares == share_by_load(loads, 2), "every rank computes the same plan"
    assert share_by_load([3, 2], 1) == [[0, 1]]
    assert share_by_load([5], 3) == [[0], [], []]


@pytest.mark.e2e
def test_torchrun_parts_give_the_single_process_bytes(tmp_path, parity_weights):
    clip = make_synthetic_clip(tmp_path / "ws", "clip", num_frames=9, size=(40, 56), keyframes=(2, 6), seed=8)
    cfg = write_cfg(tmp_path / "c.yaml", clip.folder)
    common = ["--cfg", cfg, "--load", parity_weights, "--mem_every", "2", "--device", "cpu"]
    # CPU rounding depends on the thread count: compare at one thread per process, as torchrun runs
    single = run_script("test_mf_2.py", *common, "--save", tmp_path / "single", env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    multi = run_torchrun("test_mf_2.py", *common, "--save", tmp_path / "multi")
    assert multi.returncode == 0, multi.stderr
    assert "[rank 1]" in multi.stderr and "this rank: [" in multi.stderr
    one, two = tmp_path / "single" / "clip_mem2", tmp_path / "multi" / "clip_mem2"
    assert (one / "conf.json").read_text() == (two / "conf.json").read_text()
    files = sorted(p.relative_to(one) for p in one.glob("part*/*.png"))
    assert files == sorted(p.relative_to(two) for p in two.glob("part*/*.png"))
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


@pytest.fixture
def workspace(tmp_path):
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        make_synthetic_clip(tmp_path / "ws", name, num_frames=4 + i, size=(40, 56), keyframes=(0, 3), seed=i,
                            gt_root=tmp_path / "gt")  # fmt: skip
    base = tmp_path / "base.yaml"
    base.write_text(ONE_STEP_FINETUNE_YAML)
    return tmp_path / "ws", base, tmp_path / "gt"


@pytest.mark.e2e
def test_workspace_with_two_ranks_processes_each_clip_once_and_resumes(tmp_path, workspace):
    ws, base, gt = workspace
    save = tmp_path / "results"
    run = run_torchrun(
        "tgm.py", "workspace", "--workspace", ws, "--save", save, "--cfg", base, "--gt", gt, "--device", "cpu"
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads((save / "summary.json").read_text())
    assert [s["clip"] for s in summary] == ["alpha", "beta", "gamma"]
    assert all(s["status"] == "done" and s["miou"] is not None for s in summary)
    assert {s["rank"] for s in summary} == {0, 1}, "both ranks got work"
    for name in ("alpha", "beta", "gamma"):
        log = (save / "train_log" / name / "train.log").read_text()
        assert log.count("training.loop: finetuning ") == 1, f"{name} was finetuned more than once"
        frames = len(list((ws / name).glob("*_rgb.png")))
        assert len(list((save / f"{name}_mem5" / "ensemble").glob("*_trimap.png"))) == frames
    # a rerun skips what is complete; a removed ensemble is redone
    for png in (save / "beta_mem5" / "ensemble").glob("*.png"):
        png.unlink()
    again = run_script("tgm.py", "workspace", "--workspace", ws, "--save", save, "--cfg", base)
    assert again.returncode == 0, again.stderr
    statuses = {s["clip"]: s["status"] for s in json.loads((save / "summary.json").read_text())}
    assert statuses == {"alpha": "skipped", "beta": "done", "gamma": "skipped"}
    assert "finetuning already done" in again.stderr


@pytest.mark.e2e
def test_a_failing_clip_is_reported_and_the_others_finish(tmp_path, workspace):
    ws, base, _ = workspace
    (ws / "beta" / "00000_trimap.png").unlink()
    (ws / "beta" / "00003_trimap.png").unlink()
    run = run_script("tgm.py", "workspace", "--workspace", ws, "--save", tmp_path / "r", "--cfg", base)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "1 clip(s) failed: beta" in run.stderr
    summary = {s["clip"]: s for s in json.loads((tmp_path / "r" / "summary.json").read_text())}
    assert summary["beta"]["status"] == "failed" and "no keyframes" in summary["beta"]["detail"]
    assert summary["alpha"]["status"] == summary["gamma"]["status"] == "done"


@pytest.mark.e2e
def test_finetuning_under_torchrun_writes_one_checkpoint(tmp_path):
    clip = make_synthetic_clip(tmp_path / "ws", "clip", num_frames=4, size=(40, 56), keyframes=(0, 3), seed=1)
    cfg = write_cfg(tmp_path / "clip.yaml", clip.folder)
    run = run_torchrun(
        "online_finetune_test.py", "--cfg", cfg, "--device", "cpu", "SYSTEM.OUTDIR", tmp_path / "log",
        "SYSTEM.NUM_WORKERS", 0, "SYSTEM.RANDOM_SEED", 3, "TRAIN.TRAIN_INPUT_SIZE", "(48, 32)",
        "TRAIN.TOTAL_STEPS", 2, "FINETUNE.MIN_UNKNOWN_PIXELS", 30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "log" / "clip"
    assert sorted(p.name for p in run_dir.glob("*.pth.tar")) == ["checkpoint_2.pth.tar", "optimizer_2.pth.tar"]
    assert "(2 ranks)" in (run_dir / "train.log").read_text()
    assert len(torch.load(run_dir / "checkpoint_2.pth.tar")) == 558


def fake_vm108(root):
    """Two tiny videos in the VideoMatting108 layout."""
    corr = {}
    rng = np.random.default_rng(0)
    for video, bg_video in (("v1", "bg1"), ("v2", "bg2")):
        for t in range(3):
            fg = np.zeros((30, 40, 4), np.uint8)
            fg[..., :3] = rng.integers(0, 255, (30, 40, 3))
            fg[8:22, 10:30, 3] = 255
            fg[8:22, 10, 3] = 128  # a soft edge
            atomic_write_png_dir(root / "FG_done" / video, f"{t:04d}.png", fg)
            bg = np.full((60, 80, 3), 40 * (t + 1), np.uint8)  # another size: resized to the fg
            (root / "BG_done" / bg_video).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "BG_done" / bg_video / f"{t:04d}.jpg"), bg)
            corr[f"{video}/{t:04d}.png"] = f"{bg_video}/{t:04d}.jpg"
    (root / "frame_corr.json").write_text(json.dumps(corr))
    (root / "val_videos.txt").write_text("v1\n")
    (root / "train_videos.txt").write_text("v2\n")


def atomic_write_png_dir(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_png(folder / name, image)


@pytest.mark.e2e
def test_vm108_import_composites_and_writes_ground_truth(tmp_path):
    root = tmp_path / "VideoMatting108"
    fake_vm108(root)
    run = run_script("tgm.py", "import-vm108", "--root", root, "--out", tmp_path / "out", "--band_diameter", "narrow",
                     "--keyframes", "0", "2")  # fmt: skip
    assert run.returncode == 0, run.stderr
    clip = tmp_path / "out" / "val" / "v1"
    assert sorted(p.name for p in clip.iterdir()) == [
        "0000_rgb.png", "0000_trimap.png", "0001_rgb.png", "0002_rgb.png", "0002_trimap.png",
    ]  # fmt: skip
    assert not (tmp_path / "out" / "val" / "v2").exists(), "only the split's videos"
    fg = cv2.imread(str(root / "FG_done" / "v1" / "0001.png"), cv2.IMREAD_UNCHANGED)
    rgb = cv2.imread(str(clip / "0001_rgb.png"))
    assert np.array_equal(rgb[15, 20], fg[15, 20, :3]), "opaque pixels show the foreground"
    assert np.abs(rgb[0, 0].astype(int) - 80).max() <= 2, "transparent pixels show the background"
    edge = 0.5 * fg[15, 10, :3].astype(float) + 0.5 * 80
    assert np.abs(rgb[15, 10] - edge).max() <= 2
    trimap = cv2.imread(str(tmp_path / "out" / "val_gt" / "v1" / "0001_trimap.png"), cv2.IMREAD_GRAYSCALE)
    assert trimap[15, 10] == 128 and trimap[15, 20] == 255 and trimap[0, 0] == 0
    assert trimap[15, 8] == 128, "the soft band is widened by the narrow width (5 px)"
    alpha = cv2.imread(str(tmp_path / "out" / "val_gt" / "v1" / "0001_alpha.png"), cv2.IMREAD_GRAYSCALE)
    assert alpha[15, 10] == 128


@pytest.mark.e2e
def test_vm108_import_names_what_is_missing(tmp_path):
    root = tmp_path / "VideoMatting108"
    fake_vm108(root)
    (root / "val_videos.txt").unlink()
    run = run_script("tgm.py", "import-vm108", "--root", root, "--out", tmp_path / "out")
    assert run.returncode == 2 and "val_videos.txt is missing" in run.stderr
    run = run_script("tgm.py", "import-vm108", "--root", root, "--out", tmp_path / "out", "--split", "train",
                     "--videos", "v9")  # fmt: skip
    assert run.returncode == 2 and "no frames of video 'v9'" in run.stderr
