"""``tgm.py tune``: the fastest path whose labels keep 99.9% of fp32's, measured on the clip's own frames;
a slow or a disagreeing candidate is not chosen; a measurement is kept per machine, device, frame size,
checkpoint, flags and the clip's visits; the workspace and the app use it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import pipeline.tune as tune
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from helpers import run_main
from inference.options import PropagationOptions
from model.stm import STM
from pipeline.tune import TuneRow, choose, tune_clip, tune_key, with_path

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    return scan_clip(make_synthetic_clip(folder, "c", num_frames=8, size=(40, 64), keyframes=(0, 7), seed=5).folder)


@pytest.fixture
def only_bf16_native(monkeypatch):
    monkeypatch.setattr(tune, "native_precisions", lambda device: ["bf16"])


@pytest.mark.unit
def test_the_choice_is_the_fastest_run_among_the_faithful():
    rows = [TuneRow([], 1.0, 1.0, 0.0), TuneRow(["--fast"], 0.6, 0.9995, 0.01),
            TuneRow(["--fast", "--precision", "bf16"], 0.3, 0.998, 0.2),  # fastest, but moves 0.2% of labels
            TuneRow(["--fast", "--compile"], 0.5, 0.9995, 0.01, once_seconds=60.0)]  # fmt: skip
    assert choose(rows, clip_visits=100).flags == ["--fast"], "the compile does not repay itself in 100 visits"
    assert choose(rows, clip_visits=1000).flags == ["--fast", "--compile"], "it does in 1000"
    assert choose(rows[:1], clip_visits=10).flags == [], "the default is always there to fall back on"


@pytest.mark.unit
def test_a_candidate_made_slow_is_not_chosen(clip, parity_weights, monkeypatch):
    segment = STM.segment

    def slow_when_fast(self, *args, **kwargs):
        if self.share_skips:  # the --fast paths
            time.sleep(0.3)
        return segment(self, *args, **kwargs)

    monkeypatch.setattr(tune, "native_precisions", lambda device: [])
    monkeypatch.setattr(STM, "segment", slow_when_fast)
    result = tune_clip(clip, parity_weights, PropagationOptions(), CPU, visits=2)
    assert result.choice == [] and result.row(["--fast"]).seconds_per_visit > result.row([]).seconds_per_visit
    assert result.row(["--fast"]).agreement > 0.999, "it agreed: only its time kept it out"


@pytest.mark.e2e
def test_a_candidate_that_moves_labels_is_not_chosen_however_fast(clip, parity_weights, monkeypatch,
                                                                 only_bf16_native):  # fmt: skip
    segment = STM.segment

    def wrong_in_bf16(self, *args, **kwargs):
        logits = segment(self, *args, **kwargs)
        return logits.flip(1) if torch.is_autocast_enabled("cpu") else logits  # background <-> foreground

    def slow_in_fp32(self, *args, **kwargs):
        if not torch.is_autocast_enabled("cpu"):
            time.sleep(0.2)
        return wrong_in_bf16(self, *args, **kwargs)

    monkeypatch.setattr(STM, "segment", slow_in_fp32)
    result = tune_clip(clip, parity_weights, PropagationOptions(), CPU, visits=2)
    bf16 = result.row(["--fast", "--precision", "bf16"])
    assert bf16.agreement < 0.999 and "not chosen" in bf16.note
    assert bf16.seconds_per_visit < min(r.seconds_per_visit for r in result.rows if r is not bf16)
    assert result.choice != bf16.flags


@pytest.mark.unit
def test_the_rows_and_the_json_say_what_was_measured(clip, parity_weights, only_bf16_native):
    result = tune_clip(clip, parity_weights, PropagationOptions(), CPU, visits=2)
    data = json.loads(json.dumps(result.as_json()))
    assert data["frame_size"] == [40, 64] and data["device"] == "cpu"
    assert [r["flags"] for r in data["rows"] if r["kind"] == "candidate"] == [
        [],
        ["--fast"],
        ["--fast", "--precision", "bf16"],
    ]
    assert all({"flags", "seconds_per_visit", "agreement", "max_diff"} <= set(r) for r in data["rows"])
    assert data["rows"][0]["agreement"] == 1.0 and data["choice"] in [r["flags"] for r in data["rows"]]
    sizes = [r for r in data["rows"] if r["kind"] == "size"]
    assert sizes == [], "a 40-line clip offers no smaller internal size"


@pytest.mark.e2e
def test_the_measurement_is_kept_per_machine_device_size_checkpoint_and_flags(clip, parity_weights, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    options = PropagationOptions(max_memory=8)
    smaller = PropagationOptions(max_memory=8, max_internal_size=480)
    key = tune_key("cpu: X", CPU, (40, 64), "sha256:a", options)
    assert tune_key("cpu: X", CPU, (40, 64), "sha256:a", with_path(options, ["--fast"])) == key, "not the path"
    assert tune_key("cpu: X", CPU, (40, 64), "sha256:a", options, visits=400) != key, "a longer clip: compile?"
    for other in (tune_key("cpu: Y", CPU, (40, 64), "sha256:a", options),
                  tune_key("cpu: X", torch.device("cuda", 0), (40, 64), "sha256:a", options),
                  tune_key("cpu: X", CPU, (48, 64), "sha256:a", options),
                  tune_key("cpu: X", CPU, (40, 64), "sha256:b", options),
                  tune_key("cpu: X", CPU, (40, 64), "sha256:a", smaller)):  # fmt: skip
        assert other != key
    monkeypatch.setattr(tune, "native_precisions", lambda device: [])
    first = tune_clip(clip, parity_weights, options, CPU, save=tmp_path, visits=2)
    tune.keep(tmp_path, first, "c")

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(tune.Measurer, "__call__", no_measuring)
    again = tune_clip(clip, parity_weights, options, CPU, save=tmp_path, visits=2)
    assert again.key == first.key and again.choice == first.choice
    with pytest.raises(AssertionError, match="measured again"):  # another checkpoint is another measurement
        other = tmp_path / "other.pth"
        other.write_bytes(Path(parity_weights).read_bytes() + b"\0")
        tune_clip(clip, other, options, CPU, save=tmp_path, visits=2)


@pytest.mark.cli
def test_tgm_tune_prints_the_table_and_writes_the_json(clip, parity_weights, tmp_path):
    out = tmp_path / "tune.json"
    run = run_main("tgm.py", "tune", clip.path, "--load", parity_weights, "--json", out, "--visits", "2",
                   "--save", tmp_path / "kept")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "choice:" in run.stdout and "x default" in run.stdout
    data = json.loads(out.read_text())
    assert set(data) >= {"choice", "rows", "device", "frame_size"}
    assert list((tmp_path / "kept" / "tune").glob("*.json")), "kept for the next time"
    refused = run_main("tgm.py", "tune", clip.path, "--load", parity_weights, "--fast")
    assert refused.returncode == 2 and "chooses --fast" in refused.stderr


@pytest.mark.e2e
def test_the_workspace_propagates_with_the_measured_path_and_says_so(clip, parity_weights, tmp_path):
    workspace = clip.path.parent
    save = tmp_path / "save"
    run = run_main("tgm.py", "workspace", "--workspace", workspace, "--save", save, "--load", parity_weights,
                   "--tune")  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads((save / "summary.json").read_text())[0]
    assert "x the default" in summary["path"] and "% of labels" in summary["path"]
    assert "propagating with" in run.stderr and "visits" in run.stderr, "the log states the choice and the time"
    refused = run_main("tgm.py", "workspace", "--workspace", workspace, "--save", save, "--load", parity_weights,
                       "--tune", "--precision", "bf16")  # fmt: skip
    assert refused.returncode == 2 and "--tune chooses the path itself" in refused.stderr


@pytest.mark.unit
def test_the_app_proposes_what_was_measured_for_the_clip(tmp_path, parity_weights, monkeypatch):
    from test_app import TOKEN, as_page

    from helpers import app_workspace
    from webapp.server import AppConfig, create_app

    workspace = app_workspace(tmp_path)
    save = tmp_path / "results"
    client = as_page(create_app(AppConfig(workspace, save, TOKEN, load=parity_weights)))
    before = client.get("/api/clips/clip/settings").get_json()
    assert before["proposed"]["tune"] and before["flags"] == ["--tune"] and before["tuned"] is None
    monkeypatch.setattr(tune, "native_precisions", lambda device: [])
    measured = tune_clip(scan_clip(workspace / "clip"), parity_weights, PropagationOptions(), CPU, visits=2)
    tune.keep(save, measured, "clip")
    after = client.get("/api/clips/clip/settings").get_json()
    assert after["notes"]["tune"].startswith(f"measured here: {measured.summary()}")
    assert after["tuned"]["choice"] == measured.choice and len(after["tuned"]["rows"]) == len(measured.rows)
