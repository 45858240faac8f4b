"""User mistakes: a clear message naming the culprit, exit code 2, no traceback, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.synthetic import make_synthetic_clip
from helpers import run_main, run_script, write_cfg
from utils.io import atomic_write_png


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def source_clip(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("errors")
    return make_synthetic_clip(workspace, "clip", num_frames=5, size=(40, 56), keyframes=(0, 3), seed=4).folder


@pytest.fixture
def clip(tmp_path, source_clip) -> Path:
    """A fresh copy of a valid 5-frame clip (keyframes 0 and 3) per test."""
    folder = tmp_path / "ws" / "clip"
    shutil.copytree(source_clip, folder)
    return folder


def assert_user_error(run, *culprits: str) -> None:
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    for culprit in culprits:
        assert culprit in run.stderr, f"{culprit!r} not in:\n{run.stderr}"


@pytest.fixture
def propagate(tmp_path, parity_weights):
    """propagate(clip folder, *flags, cfg_extra=yaml text, load=checkpoint) runs test_mf_2.py."""

    def run(dataset_path, *flags, cfg_extra="", load=parity_weights):
        cfg = write_cfg(tmp_path / "c.yaml", dataset_path, cfg_extra)
        return run_main("test_mf_2.py", "--cfg", cfg, "--load", load, "--save", tmp_path / "out", *flags)

    return run


def check_untouched(clip_dir: Path, before: dict[str, str]) -> None:
    assert snapshot(clip_dir) == before, "the input folder changed"


# --- the clip folder -----------------------------------------------------------------------------


@pytest.mark.cli
def test_dataset_path_missing(tmp_path, propagate):
    assert_user_error(propagate(tmp_path / "nowhere"), "nowhere does not exist")


@pytest.mark.cli
def test_dataset_path_is_a_file(tmp_path, clip, propagate):
    assert_user_error(propagate(clip / "00000_rgb.png"), "00000_rgb.png is neither a folder nor a video")


@pytest.mark.cli
def test_dataset_path_empty(tmp_path, propagate):
    (tmp_path / "empty").mkdir()
    assert_user_error(propagate(tmp_path / "empty"), "empty has no frames", "it is empty")


@pytest.mark.cli
def test_dataset_path_without_frames(tmp_path, propagate):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert_user_error(propagate(folder), "other has no frames", "_rgb.png")


@pytest.mark.cli
def test_no_keyframes(tmp_path, clip, propagate):
    for trimap in clip.glob("*_trimap.png"):
        trimap.unlink()
    before = snapshot(clip)
    assert_user_error(propagate(clip), "has no keyframes")
    check_untouched(clip, before)


@pytest.mark.cli
@pytest.mark.parametrize(
    ("gt_idx", "culprit"),
    [("[9]", "GT_IDX names frame 9"), ("[0, 0]", "frame 0 more than once"), ("[1]", "00001_trimap.png does not exist")],
)
def test_bad_gt_idx(tmp_path, clip, gt_idx, culprit, propagate):
    before = snapshot(clip)
    assert_user_error(propagate(clip, cfg_extra=f"FINETUNE:\n  GT_IDX: {gt_idx}\n"), culprit)
    check_untouched(clip, before)


@pytest.mark.cli
def test_trimap_without_frame(tmp_path, clip, propagate):
    shutil.copy(clip / "00000_trimap.png", clip / "00099_trimap.png")
    assert_user_error(propagate(clip), "00099_trimap.png has no matching frame")


@pytest.mark.cli
def test_two_files_for_one_stem(tmp_path, clip, propagate):
    shutil.copy(clip / "00001_rgb.png", clip / "00001_rgb.PNG")
    assert_user_error(propagate(clip), "two files for rgb '00001'", "00001_rgb.PNG")


@pytest.mark.cli
def test_frames_of_other_formats_are_named(tmp_path, clip, propagate):
    cv2.imwrite(str(clip / "00005_rgb.jpg"), np.zeros((40, 56, 3), np.uint8))
    assert_user_error(propagate(clip), "00005_rgb.jpg would not be read")


@pytest.mark.cli
def test_frames_of_different_sizes(tmp_path, clip, propagate):
    atomic_write_png(clip / "00002_rgb.png", np.zeros((41, 56, 3), np.uint8))
    assert_user_error(propagate(clip), "00002_rgb.png is 56x41", "one size")


@pytest.mark.cli
def test_trimap_of_another_size(tmp_path, clip, propagate):
    atomic_write_png(clip / "00003_trimap.png", np.zeros((40, 50), np.uint8))
    assert_user_error(propagate(clip), "00003_trimap.png is 50x40", "size of its frame")


@pytest.mark.cli
def test_unreadable_frame(tmp_path, clip, propagate):
    (clip / "00002_rgb.png").write_bytes(b"this is not an image")
    before = snapshot(clip)
    assert_user_error(propagate(clip), "00002_rgb.png is missing or not a readable image")
    check_untouched(clip, before)


@pytest.mark.cli
def test_truncated_frame(tmp_path, clip, propagate):
    data = (clip / "00002_rgb.png").read_bytes()
    (clip / "00002_rgb.png").write_bytes(data[: len(data) // 2])
    assert_user_error(propagate(clip), "00002_rgb.png is a truncated PNG")


@pytest.mark.cli
@pytest.mark.parametrize("kind", ["grey", "rgba", "16-bit"])
def test_grey_rgba_and_16_bit_frames_are_converted_and_said(tmp_path, clip, kind, propagate):
    for frame in clip.glob("*_rgb.png"):
        image = cv2.imread(str(frame))
        if kind == "grey":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif kind == "rgba":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        else:
            image = image.astype(np.uint16) * 257
        atomic_write_png(frame, image)
    run = propagate(clip)
    assert run.returncode == 0, run.stderr
    expected = {"grey": "grey (converted to RGB)", "rgba": "RGBA (converted to RGB)", "16-bit": "16-bit (scaled"}
    assert expected[kind] in run.stderr


@pytest.mark.cli
def test_colour_trimap_is_read_as_grey_with_a_warning(tmp_path, clip, propagate):
    grey = cv2.imread(str(clip / "00000_trimap.png"), cv2.IMREAD_GRAYSCALE)
    colour = np.zeros((*grey.shape, 3), np.uint8)
    colour[grey == 255] = (0, 255, 0)
    colour[grey == 128] = (0, 0, 255)
    atomic_write_png(clip / "00000_trimap.png", colour)
    run = propagate(clip)
    assert run.returncode == 0, run.stderr
    assert "00000_trimap.png is a colour image" in run.stderr


@pytest.mark.cli
def test_keyframe_without_foreground_warns_when_propagating(tmp_path, clip, propagate):
    grey = cv2.imread(str(clip / "00003_trimap.png"), cv2.IMREAD_GRAYSCALE)
    grey[grey == 255] = 128
    atomic_write_png(clip / "00003_trimap.png", grey)
    run = propagate(clip)
    assert run.returncode == 0, run.stderr
    assert "00003_trimap.png has no foreground" in run.stderr


@pytest.mark.cli
def test_save_inside_the_clip_folder(tmp_path, clip, parity_weights):
    before = snapshot(clip)
    cfg = write_cfg(tmp_path / "c.yaml", clip)
    run = run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", clip / "results")
    assert_user_error(run, "is inside the clip folder")
    check_untouched(clip, before)


@pytest.mark.cli
def test_save_that_cannot_be_created(tmp_path, clip, parity_weights):
    (tmp_path / "a_file").write_text("x")
    cfg = write_cfg(tmp_path / "c.yaml", clip)
    run = run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", tmp_path / "a_file" / "out")
    assert_user_error(run, "--save", "cannot be created")


# --- checkpoints and options ---------------------------------------------------------------------


@pytest.mark.cli
def test_checkpoint_missing(tmp_path, clip, propagate):
    assert_user_error(propagate(clip, load=tmp_path / "none.pth"), "none.pth does not exist")


@pytest.mark.cli
def test_checkpoint_not_a_torch_file(tmp_path, clip, propagate):
    (tmp_path / "bad.pth").write_text("hello")
    assert_user_error(propagate(clip, load=tmp_path / "bad.pth"), "bad.pth is not a readable PyTorch file")


@pytest.mark.cli
def test_checkpoint_of_another_architecture(tmp_path, clip, propagate):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}, tmp_path / "r50.pth")
    assert_user_error(
        propagate(clip, load=tmp_path / "r50.pth"),
        "does not fit this STM network",
        "472 tensors missing",  # 558 less the optional BatchNorm counters
        "2 unexpected (conv1.weight, fc.weight)",
    )


@pytest.mark.cli
@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--mem_every", "-1"], "--mem_every -1: must be >= 0"),
        (["--max_memory", "0"], "--max_memory 0: must be >= 1"),
        (["--mem_every", "0"], "--mem_every 0 needs --max_memory"),
        (["--mem_every", "0", "--max_memory", "0"], "--max_memory 0"),
    ],
)
def test_bad_memory_options(tmp_path, clip, flags, culprit, propagate):
    assert_user_error(propagate(clip, *flags), culprit)


@pytest.mark.cli
def test_unknown_config_key(tmp_path, clip, propagate):
    assert_user_error(propagate(clip, cfg_extra="TRAIN:\n  LEARNING_RATE: 0.1\n"), "TRAIN.LEARNING_RATE")


@pytest.mark.cli
def test_config_value_of_the_wrong_type(tmp_path, clip, propagate):
    assert_user_error(propagate(clip, cfg_extra="FINETUNE:\n  DILATION: wide\n"), "FINETUNE.DILATION")


@pytest.mark.cli
def test_override_of_an_unknown_key(tmp_path, clip, propagate):
    assert_user_error(propagate(clip, "TRAIN.NOPE", "1"), "TRAIN.NOPE")


@pytest.mark.e2e
def test_debug_shows_the_traceback(tmp_path, parity_weights):
    cfg = write_cfg(tmp_path / "c.yaml", tmp_path / "nowhere")
    run = run_script("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", tmp_path / "out", "--debug")
    assert run.returncode != 0 and "Traceback" in run.stderr


# --- finetuning ----------------------------------------------------------------------------------


def finetune(tmp_path, clip, *overrides):
    cfg = write_cfg(tmp_path / "ft.yaml", clip)
    return run_main(
        "online_finetune_test.py", "--cfg", cfg, "SYSTEM.OUTDIR", tmp_path / "log", "SYSTEM.NUM_WORKERS", 0,
        "TRAIN.TRAIN_INPUT_SIZE", "(48, 32)", "TRAIN.TOTAL_STEPS", 1, "FINETUNE.MIN_UNKNOWN_PIXELS", 50, *overrides,
    )  # fmt: skip


@pytest.mark.unit
def test_finetuning_refuses_a_keyframe_without_foreground(tmp_path, clip):
    grey = cv2.imread(str(clip / "00003_trimap.png"), cv2.IMREAD_GRAYSCALE)
    grey[grey == 255] = 128
    atomic_write_png(clip / "00003_trimap.png", grey)
    before = snapshot(clip)
    assert_user_error(finetune(tmp_path, clip), "00003_trimap.png has no foreground")
    check_untouched(clip, before)


@pytest.mark.unit
def test_finetuning_crop_larger_than_the_frames(tmp_path, clip):
    assert_user_error(finetune(tmp_path, clip, "TRAIN.TRAIN_INPUT_SIZE", "(512, 512)"), "TRAIN_INPUT_SIZE (512, 512)")


@pytest.mark.unit
def test_finetuning_optimizer_file_that_does_not_fit(tmp_path, clip):
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "step": 3}, tmp_path / "opt.pth.tar")
    run = finetune(tmp_path, clip, "TRAIN.LOAD_OPT", tmp_path / "opt.pth.tar")
    assert_user_error(run, "opt.pth.tar does not fit")
    (tmp_path / "junk.pth.tar").write_text("junk")
    assert_user_error(finetune(tmp_path, clip, "TRAIN.LOAD_OPT", tmp_path / "junk.pth.tar"), "junk.pth.tar")


@pytest.mark.unit
def test_finetuning_output_inside_the_clip_folder(tmp_path, clip):
    before = snapshot(clip)
    assert_user_error(finetune(tmp_path, clip, "SYSTEM.OUTDIR", clip / "log"), "inside the clip folder")
    check_untouched(clip, before)


# --- ensemble ------------------------------------------------------------------------------------


@pytest.fixture
def result(tmp_path, clip, propagate):
    """A finished propagation of the clip, and its workspace."""
    run = propagate(clip)
    assert run.returncode == 0, run.stderr
    return tmp_path / "out" / "clip_mem5", clip.parent


@pytest.mark.cli
def test_ensemble_result_without_conf_json(result):
    folder, workspace = result
    (folder / "conf.json").unlink()
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace)
    assert_user_error(run, "clip_mem5/conf.json is missing")
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace, "clip_mem5")
    assert_user_error(run, "clip_mem5/conf.json is missing")


@pytest.mark.cli
def test_ensemble_part_png_missing(result):
    folder, workspace = result
    (folder / "part1" / "00002_tri.png").unlink()
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace)
    assert_user_error(run, "part1/00002_tri.png is missing")


@pytest.mark.cli
def test_ensemble_pngs_of_different_sizes(result):
    folder, workspace = result
    atomic_write_png(folder / "part1" / "00002_tri.png", np.zeros((10, 10, 3), np.uint8))
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace)
    assert_user_error(run, "part1/00002_tri.png is 10x10")


@pytest.mark.cli
def test_ensemble_conf_json_with_a_weight_that_is_not_a_number(result):
    folder, workspace = result
    conf = json.loads((folder / "conf.json").read_text())
    conf[1]["00002"] = "0.5"
    (folder / "conf.json").write_text(json.dumps(conf))
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace)
    assert_user_error(run, "conf.json is not a readable conf.json", "part 1 gives frame 00002 the weight '0.5'")


@pytest.mark.cli
def test_ensemble_frames_of_another_size_than_the_trimaps(result, tmp_path):
    folder, workspace = result
    other = tmp_path / "other_ws" / "clip"
    shutil.copytree(workspace / "clip", other)
    atomic_write_png(other / "00003_rgb.png", np.zeros((20, 28, 3), np.uint8))
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", other.parent)
    assert_user_error(run, "00003_rgb.png is 28x20 but the trimaps", "--dataroot holds another version")


@pytest.mark.cli
def test_ensemble_rgb_frame_missing_for_the_overlay(result, tmp_path):
    folder, workspace = result
    other = tmp_path / "other_ws" / "clip"
    shutil.copytree(workspace / "clip", other)
    (other / "00004_rgb.png").unlink()
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", other.parent)
    assert_user_error(run, "00004_rgb.png is missing")


@pytest.mark.cli
def test_ensemble_writes_nothing_into_the_workspace(result):
    folder, workspace = result
    before = snapshot(workspace)
    run = run_main("ensemble.py", "--predroot", folder.parent, "--dataroot", workspace)
    assert run.returncode == 0, run.stderr
    check_untouched(workspace, before)


# --- running out of memory -----------------------------------------------------------------------


@pytest.mark.unit
def test_out_of_memory_is_explained(tmp_path, clip, monkeypatch):
    from config import load_config
    from dataset.clip import scan_clip
    from inference.driver import propagate_clip
    from inference.options import PropagationOptions
    from model.stm import STM
    from utils.errors import UserError

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    model = STM().eval()  # the weights do not matter: every segment step runs out of memory
    monkeypatch.setattr(model, "segment", exhausted)
    cfg = load_config(write_cfg(tmp_path / "c.yaml", clip))
    with pytest.raises(UserError, match=r"out of main memory .* --max_memory"):
        propagate_clip(model, scan_clip(cfg.DATASET.PATH), tmp_path / "out", PropagationOptions(), torch.device("cpu"))
