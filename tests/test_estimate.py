"""A run's cost before it starts (tgm.py workspace --estimate, the app's Estimate button), checked against the
run it estimates."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_app import TOKEN, as_page, wait_for_job

from dataset.synthetic import make_synthetic_clip
from helpers import ONE_STEP_FINETUNE_YAML, run_main
from inference.driver import mean_memory_size
from inference.plan import Part
from pipeline.estimate import RunEstimate, describe
from webapp.server import AppConfig, create_app
from webapp.settings import RunSettings

ESTIMATE = RunEstimate(
    clip="c", frames=10, height=64, width=96, visits=16, part_pngs=18, finetune_steps=100, finetune_detail="finetuned",
    setup_seconds=1.0, seconds_per_step=0.5, finetune_save_seconds=2.0, seconds_per_visit=0.25, write_seconds=0.01,
    read_seconds=0.002, part_png_bytes=1000, fused_bytes_per_frame=300, discard_parts=False,
)  # fmt: skip


@pytest.mark.unit
def test_the_estimate_adds_up_what_it_counted_and_measured():
    assert ESTIMATE.finetune_seconds == 52
    assert ESTIMATE.propagate_seconds == pytest.approx(16 * 0.25)
    assert ESTIMATE.fuse_seconds == pytest.approx(18 * 0.002 + 2 * 10 * 0.01)
    assert ESTIMATE.seconds == pytest.approx(1 + 52 + 4 + 0.236)
    assert ESTIMATE.disk_bytes == 18 * 1000 + 10 * 300
    assert dataclasses.replace(ESTIMATE, discard_parts=True).disk_bytes == 10 * 300
    slow_writer = dataclasses.replace(ESTIMATE, write_seconds=0.5)  # the PNG writer, not the network, sets the pace
    assert slow_writer.propagate_seconds == pytest.approx(18 * 0.5)
    assert describe(ESTIMATE).startswith("c: about 57 s, finetuning 100 steps x 0.50 s and saving = 52 s")


@pytest.mark.unit
def test_the_memory_a_run_reads_is_counted_by_the_banks_own_rule():
    """The estimate times the read at the memory size a run reaches on average (its probe reads fewer)."""
    four = Part((0, 1, 2, 3), (0,))  # reads 1 (the keyframe), 2 (+ the previous frame), 3 (+ one kept)
    assert mean_memory_size([four], keep_every=1, max_memory=None) == 2
    assert mean_memory_size([four], keep_every=1, max_memory=None, skip_first=True) == 2.5
    long = Part(tuple(range(12)), (0, 11))  # two keyframes, then at most max_memory others
    assert mean_memory_size([long], keep_every=1, max_memory=3) == pytest.approx((2 + 3 + 4 + 5 * 8) / 11)


def result_bytes(folder, pattern="*.png") -> int:
    return sum(path.stat().st_size for path in folder.rglob(pattern) if path.is_file())


@pytest.mark.e2e
def test_the_estimate_of_a_run_is_checked_against_the_run(tmp_path):
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=12, size=(64, 96), keyframes=(0, 11), seed=4)
    base = tmp_path / "base.yaml"
    base.write_text(ONE_STEP_FINETUNE_YAML.replace("TOTAL_STEPS: 1", "TOTAL_STEPS: 4"))
    flags = ["--workspace", tmp_path / "ws", "--save", tmp_path / "r", "--cfg", base]
    estimated = run_main("tgm.py", "workspace", *flags, "--estimate", tmp_path / "estimate.json")
    assert estimated.returncode == 0, estimated.stderr
    assert "clip: about" in estimated.stdout and not (tmp_path / "r" / "clip_mem5").exists(), (
        "an estimate only measures"
    )
    estimate = json.loads((tmp_path / "estimate.json").read_text())["clip"]
    assert (estimate["frames"], estimate["visits"], estimate["part_pngs"], estimate["finetune_steps"]) == (
        12,
        20,
        22,
        4,
    )

    ran = run_main("tgm.py", "workspace", *flags)
    assert ran.returncode == 0, ran.stderr
    (outcome,) = json.loads((tmp_path / "r" / "summary.json").read_text())
    result = tmp_path / "r" / "clip_mem5"
    assert len(list(result.glob("part*/*_tri.png"))) == estimate["part_pngs"]
    # what the estimate says against what the run did: disk by the bytes written, time within a wide factor
    # (two measurements of the same machine seconds apart; the estimate leaves out shared query work)
    # the finetuning's checkpoints and optimizer states count: they are most of the bytes
    written = result_bytes(result) + result_bytes(tmp_path / "r" / "train_log", "*")
    assert estimate["finetune_bytes"] > result_bytes(result)
    assert 0.5 < written / estimate["disk_bytes"] < 2
    assert 0.25 < outcome["propagate_s"] / estimate["propagate_seconds"] < 4
    assert 0.25 < outcome["finetune_s"] / estimate["finetune_seconds"] < 4


@pytest.mark.e2e
def test_the_page_estimates_a_run_with_the_clips_settings(tmp_path, parity_weights):
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=6, size=(48, 64), keyframes=(0, 5), seed=2)
    app = create_app(AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN, load=parity_weights))
    page = as_page(app)
    assert page.get("/api/clips/clip/estimate").get_json()["estimate"] is None
    started = page.post("/api/job", json={"clip": "clip", "kind": "estimate"})
    assert started.status_code == 202
    job = wait_for_job(page)
    assert job["state"] == "done", "\n".join(job["log"])
    estimate = page.get("/api/clips/clip/estimate").get_json()["estimate"]
    assert estimate["visits"] == 8 and estimate["finetune_steps"] == 0 and estimate["seconds"] > 0
    assert not (tmp_path / "results" / "clip_mem5").exists()
    # another setting: that estimate is not shown for it
    page.post("/api/clips/clip/settings", json=dataclasses.asdict(RunSettings(max_memory=4)))
    assert page.get("/api/clips/clip/estimate").get_json()["estimate"] is None
