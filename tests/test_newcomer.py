"""A newcomer's own video without the released weights: the page says what to expect (random weights,
warnings, a score on its whole scale), finetuning is set from the page, the estimate counts and keys
everything the run reads, small subjects keep their core, and a range of a video keeps its rate."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from test_app import TOKEN, as_page

import commands
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from dataset.video import SOURCE_RECORD, Extraction, extract_frames, write_video
from helpers import app_workspace, run_main
from inference.uncertainty import Uncertainty
from training.loop import loader_workers
from utils.errors import UserError
from utils.images import encode_png
from webapp import jobs
from webapp.server import AppConfig, commands_for, create_app
from webapp.settings import Machine, RunSettings, recommend, workspace_flags

CPU_ONLY = Machine(None)


@pytest.fixture
def workspace(tmp_path):
    return app_workspace(tmp_path)


def random_start_app(tmp_path, workspace):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("TRAIN:\n  BASE_LR: 1.0e-6\n  TOTAL_STEPS: 500\n")  # template.yaml's, no LOAD_CKPT
    return create_app(AppConfig(workspace, tmp_path / "results", TOKEN, cfg=cfg))


# --- random weights: the page says so and proposes what works -------------------------------------


@pytest.mark.unit
def test_a_random_start_is_said_in_the_page_and_gets_a_learning_rate_that_learns(tmp_path, workspace):
    page = as_page(random_start_app(tmp_path, workspace))
    data = page.get("/api/clips/clip/settings").get_json()
    assert "RANDOM weights" in data["start"] and data["finetuning"]
    proposed = data["proposed"]
    assert proposed["finetune_lr"] == 1e-4 and proposed["finetune_schedule"] == "poly"
    assert (
        "RANDOM weights" in data["notes"]["finetune_lr"]
        and "1e-6 is for the released weights" in (data["notes"]["finetune_lr"])
    )
    assert data["flags"][-4:] == ["TRAIN.BASE_LR", "0.0001", "TRAIN.LR_STRATEGY", "poly"]


@pytest.mark.unit
def test_with_a_checkpoint_there_is_no_random_start_note(tmp_path, workspace, parity_weights):
    page = as_page(create_app(AppConfig(workspace, tmp_path / "results", TOKEN, load=parity_weights)))
    data = page.get("/api/clips/clip/settings").get_json()
    assert data["start"] == "" and not data["finetuning"] and data["proposed"]["finetune_lr"] == 0


# --- a job that finished with warnings says so ----------------------------------------------------


@pytest.mark.e2e
def test_a_job_keeps_its_warnings_apart_from_its_log(tmp_path):
    runner = jobs.JobRunner(tmp_path)
    script = tmp_path / "warns.py"
    script.write_text(
        "print('12:00:00 WARNING matte: 58 of 60 frames: no sure foreground: alpha 0 (00001, 00002 and 56 more)')\n"
        "for i in range(200):\n    print(f'12:00:01 INFO step {i}')\n"
    )
    job = runner.start("clip", "matte", [[str(script)]])
    runner._thread.join(30)
    shown = job.as_json()
    assert shown["state"] == "done" and shown["warning_count"] == 1
    assert shown["warnings"] == ["matte: 58 of 60 frames: no sure foreground: alpha 0 (00001, 00002 and 56 more)"]
    assert not any("WARNING" in line for line in shown["log"]), "the warning scrolled out of the log: kept apart"


@pytest.mark.e2e
def test_matting_without_a_sure_foreground_ends_with_one_warning_naming_the_frames(tmp_path):
    sample = make_synthetic_clip(tmp_path / "ws", "c", num_frames=3, size=(24, 32), keyframes=(0,), seed=2)
    trimaps = tmp_path / "trimaps"
    trimaps.mkdir()
    for stem in sample.stems:
        labels = np.zeros((24, 32), np.uint8)
        labels[8:16, 8:20] = 128  # unknown and background only: no sure foreground
        cv2.imwrite(str(trimaps / f"{stem}_trimap.png"), labels)
    run = run_main("tgm.py", "matte", "--trimaps", trimaps, "--frames_dir", sample.folder, "--out", tmp_path / "m")
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "3 of 3 frames: no sure foreground" in warnings[0]


# --- the disagreement score on its whole scale ----------------------------------------------------


@pytest.mark.unit
def test_a_clip_unsure_everywhere_is_said_to_be_so():
    order = [f"{i:05d}" for i in range(12)]
    flat = {s: 0.81 + 0.001 * (i % 5) for i, s in enumerate(order[1:-1])}
    unsure = Uncertainty(flat, [], [order[0], order[-1]], order)
    assert unsure.uniform and unsure.as_json()["uniform"] and abs(unsure.as_json()["level"] - 0.812) < 0.01
    varied = Uncertainty({s: 0.05 + 0.05 * i for i, s in enumerate(order[1:-1])}, [], [order[0], order[-1]], order)
    assert not varied.uniform
    assert "0 = certain, 1 = no agreement" in unsure.as_json()["measure"]


# --- finetuning set from the page -----------------------------------------------------------------


@pytest.mark.unit
def test_finetuning_settings_become_config_overrides_after_every_flag(tmp_path, workspace):
    settings = RunSettings(tune=True, max_memory=8, finetune_steps=120, finetune_crop=256, finetune_lr=1e-4,
                           finetune_schedule="poly", frames="1-3")  # fmt: skip
    flags = workspace_flags(settings)
    assert flags == ["--tune", "--max_memory=8", "DATASET.FRAMES", "1-3", "TRAIN.TOTAL_STEPS", "120",
                     "TRAIN.TRAIN_INPUT_SIZE", "(256, 256)", "TRAIN.BASE_LR", "0.0001", "TRAIN.LR_STRATEGY",
                     "poly"]  # fmt: skip
    parser = commands.command_parser(commands.command_module("workspace"))
    parsed = parser.parse_args(["--workspace", "ws", "--save", "out", *flags])
    assert parsed.tune and parsed.opts == flags[2:]
    from config import load_config

    cfg = load_config(None, parsed.opts)
    assert (cfg.TRAIN.TOTAL_STEPS, tuple(cfg.TRAIN.TRAIN_INPUT_SIZE), cfg.TRAIN.BASE_LR) == (120, (256, 256), 1e-4)


@pytest.mark.unit
def test_a_crop_larger_than_the_frames_and_a_range_beyond_them_are_refused(tmp_path, workspace):
    page = as_page(random_start_app(tmp_path, workspace))
    big = page.post("/api/clips/clip/settings", json={"finetune_crop": 512})
    assert big.status_code == 400 and "larger than the frames (56x40)" in big.get_json()["error"]
    beyond = page.post("/api/clips/clip/settings", json={"frames": "2-9"})
    assert beyond.status_code == 400 and "frames 0 to 4" in beyond.get_json()["error"]
    with pytest.raises(UserError, match="finetune_lr"):
        RunSettings.from_json({"finetune_lr": True}, "s")


@pytest.mark.unit
def test_on_a_cpu_finetuning_is_proposed_in_minutes_not_hours():
    settings, notes = recommend(60, 576, 768, CPU_ONLY, start="checkpoint")
    assert (settings.finetune_steps, settings.finetune_crop) == (100, 320) and "no GPU" in notes["finetune_steps"]
    assert settings.finetune_lr == 0, "a checkpoint's own learning rate is the config's"
    assert "the nearest size measured" in notes["max_internal_size"], "576 lines is neither 720p nor 1080p"


# --- an estimate never describes another run ------------------------------------------------------


@pytest.mark.unit
def test_the_estimate_is_keyed_on_everything_the_run_reads(tmp_path, workspace, monkeypatch):
    import webapp.server as server

    page = as_page(random_start_app(tmp_path, workspace))
    asked = []
    original = server.estimate_path
    monkeypatch.setattr(server, "estimate_path", lambda *args: asked.append(original(*args)) or asked[-1])

    def estimate_file() -> str:
        page.get("/api/clips/clip/estimate")
        return asked[-1].name

    first = estimate_file()
    (tmp_path / "my.yaml").write_text("TRAIN:\n  BASE_LR: 1.0e-6\n  TOTAL_STEPS: 50\n")  # the config edited
    after_config = estimate_file()
    keyframe = np.full((40, 56), 128, np.uint8)
    keyframe[:10], keyframe[30:] = 0, 255
    assert (
        page.put("/api/clips/clip/keyframe/00002", data=encode_png(keyframe), content_type="image/png").status_code
        == 200
    )
    after_keyframe = estimate_file()
    assert len({first, after_config, after_keyframe}) == 3


# --- a small subject keeps its core ---------------------------------------------------------------


@pytest.mark.unit
def test_a_band_that_swallows_a_small_subject_is_warned_of(workspace, parity_weights, tmp_path):
    app = create_app(AppConfig(workspace, tmp_path / "results", TOKEN, load=parity_weights))
    view = app.extensions["trimap_view"]
    labels = np.zeros((40, 56), np.uint8)
    labels[10:30, 20:30] = 128
    labels[19:21, 24:26] = 255  # 4 px of subject in a wide band
    assert "narrow the band" in view.trimap_warning(encode_png(labels))
    labels[12:28, 22:28] = 255
    assert view.trimap_warning(encode_png(labels)) is None


# --- a range of a video, and its rate -------------------------------------------------------------


@pytest.mark.unit
def test_extracted_frames_keep_their_videos_rate_in_the_apps_foreground_video(tmp_path):
    frames = [np.full((24, 32, 3), 30 * i % 255, np.uint8) for i in range(6)]
    video = tmp_path / "walk.mp4"
    write_video(video, frames, 10)
    clip = tmp_path / "ws" / "walk"
    extract_frames(video, clip, Extraction(1, 0, 2, 3))
    assert json.loads((clip / SOURCE_RECORD).read_text())["fps"] == 10.0
    config = AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN)

    class Result:
        path, matte_dir = tmp_path / "results" / "walk_mem5", tmp_path / "results" / "walk_mem5" / "matte"

    encode = commands_for(config, "walk", "matte", Result(), source=clip)[1]
    assert encode[encode.index("--fps") + 1] == "10", "not the 25 fps a plain folder gets"


@pytest.mark.unit
def test_a_range_of_a_video_is_a_clip_of_those_frames_only(tmp_path):
    frames = [np.full((24, 32, 3), 20 * i, np.uint8) for i in range(10)]
    video = tmp_path / "walk.mp4"
    write_video(video, frames, 25)
    trimaps = tmp_path / "walk_trimaps"
    trimaps.mkdir()
    labels = np.zeros((24, 32), np.uint8)
    labels[4:20, 4:28], labels[8:16, 10:22] = 128, 255
    for number in (1, 4, 7):
        cv2.imwrite(str(trimaps / f"{number:05d}_trimap.png"), labels)  # a video's stems: 5 digits at least
    clip = scan_clip(video, frames="3-8")
    assert clip.stems == [f"{i:05d}" for i in range(3, 9)]
    assert [clip.stems[k] for k in clip.keyframe_indices] == ["00004", "00007"]
    assert np.abs(clip.read_frame(0).astype(int) - frames[3]).mean() < 3, "index 0 is the video's frame 3"
    clip.close()
    with pytest.raises(UserError, match=r"DATASET\.FRAMES"):
        scan_clip(video, frames="8-3")


# --- smaller --------------------------------------------------------------------------------------


@pytest.mark.unit
def test_loader_workers_are_at_most_the_cores(monkeypatch):
    import training.loop as loop

    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: {0, 1})
    assert loader_workers(4) == 2 and loader_workers(1) == 1 and loader_workers(0) == 0


@pytest.mark.unit
def test_the_app_help_names_videos_as_clips():
    parser = commands.command_parser(commands.command_module("app"))
    help_text = parser.format_help()
    assert "videos" in help_text and "folder of clip folders" not in help_text


@pytest.mark.e2e
def test_finetuning_from_random_weights_with_the_released_weights_rate_says_it_learns_nothing(tmp_path):
    from helpers import ONE_STEP_FINETUNE_YAML, write_cfg

    sample = make_synthetic_clip(tmp_path / "ws", "c", num_frames=3, size=(64, 96), keyframes=(0,), seed=4)
    cfg = write_cfg(tmp_path / "c.yaml", sample.folder, ONE_STEP_FINETUNE_YAML)
    run = run_main("online_finetune_test.py", "--cfg", cfg, "TRAIN.BASE_LR", "1e-6", "SYSTEM.OUTDIR", tmp_path / "log")
    assert run.returncode == 0, run.stderr
    assert "RANDOM weights" in run.stderr and "TRAIN.BASE_LR 1e-06 is meant for the released weights" in run.stderr
