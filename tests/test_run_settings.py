"""The app's run settings: proposed from the clip and the machine, checked, remembered per clip, and passed to
the propagation job as the flags of tgm.py workspace."""

from __future__ import annotations

import json

import pytest
from test_app import TOKEN, Client, as_page, stranger

import commands
from helpers import app_workspace
from utils.errors import UserError
from webapp.server import AppConfig, commands_for, create_app
from webapp.settings import MAX_FILE_BYTES, Machine, RunSettings, SettingsStore, recommend, workspace_flags

pytestmark = pytest.mark.unit

CPU_ONLY, WITH_GPU = Machine(None), Machine("cuda")


def test_a_short_small_clip_on_a_cpu_gets_the_published_computation_on_the_measured_path():
    settings, notes = recommend(60, 480, 854, CPU_ONLY)  # 480 px is not above 480
    assert settings == RunSettings(tune=True) and set(notes) == {"tune"} and workspace_flags(settings) == ["--tune"]
    assert "measures here" in notes["tune"]


def test_hd_long_clips_and_gpus_get_what_pays_with_what_it_trades():
    settings, notes = recommend(9000, 1080, 1920, WITH_GPU)
    assert settings == RunSettings(tune=True, max_internal_size=720, max_memory=8)
    assert set(notes) == {"tune", "max_internal_size", "max_memory"}
    assert "1920x1080" in notes["max_internal_size"] and "9000 frames" in notes["max_memory"]
    assert recommend(9000, 720, 1280, WITH_GPU)[0] == RunSettings(tune=True, max_memory=8)  # 720p is not above 720
    # without a GPU, anything above 480 px is propagated at 480 (HD at full size takes seconds a frame there)
    assert recommend(100, 1080, 1920, CPU_ONLY)[0] == RunSettings(tune=True, max_internal_size=480)
    assert recommend(300, 720, 1280, CPU_ONLY)[0] == RunSettings(tune=True, max_internal_size=480, max_memory=8)
    assert "no GPU" in recommend(100, 720, 1280, CPU_ONLY)[1]["max_internal_size"]


def test_the_proposal_says_what_was_measured_here():
    measured = {"summary": "--fast --precision bf16, 2.4x the default, 99.98% of labels", "checkpoint_name": "w.pth"}
    notes = recommend(60, 480, 854, CPU_ONLY, measured)[1]
    assert notes["tune"].startswith("measured here: --fast --precision bf16, 2.4x the default, 99.98% of labels")
    # with tune on, the measurement decides fast and precision: the flags say --tune, not what the page shows
    assert workspace_flags(RunSettings(tune=True, fast=True, precision="bf16")) == ["--tune"]


def test_the_flags_are_flags_tgm_py_workspace_takes():
    every = RunSettings("cuda:1", True, "bf16", 480, 6, True)
    flags = workspace_flags(every)
    assert flags == ["--device", "cuda:1", "--fast", "--precision", "bf16", "--max_internal_size=480",
                     "--max_memory=6", "--discard_parts"]  # fmt: skip
    parser = commands.command_parser(commands.command_module("workspace"))
    parsed = parser.parse_args(["--workspace", "ws", "--save", "out", *flags])
    assert (parsed.device, parsed.fast, parsed.precision) == ("cuda:1", True, "bf16")
    assert (parsed.max_internal_size, parsed.max_memory, parsed.discard_parts) == (480, 6, True)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"fast": "yes"}, "fast must be true or false"),
        ({"max_memory": -1}, "max_memory must be a whole number"),
        ({"max_memory": 1}, "at least 2"),
        ({"max_internal_size": 32}, "at least 64"),
        ({"max_internal_size": True}, "max_internal_size must be a whole number"),
        ({"precision": "int8"}, "precision must be one of fp32, tf32, bf16, fp16"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps"),
        ({"device": "cuda:\u00b2"}, "device must be"),  # a digit to str.isdigit, not to torch
        ({"device": "cuda:0 --load /etc/passwd"}, "device must be"),
        ({"max_internal_size": 10**300}, "from 0 \\(off\\) to 16384"),
        ({"max_memory": 10001}, "from 0 \\(off\\) to 10000"),
        ({"speed": 3}, "unknown setting 'speed'"),
        ([1, 2], "settings must be an object"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(given, words):
    with pytest.raises(UserError, match=words):
        RunSettings.from_json(given, "settings of clip")
    assert RunSettings.from_json({"device": "cuda:0", "max_memory": 2}, "x") == RunSettings("cuda:0", max_memory=2)


@pytest.fixture
def app(tmp_path, parity_weights):
    return create_app(AppConfig(app_workspace(tmp_path), tmp_path / "results", TOKEN, load=parity_weights))


def test_the_page_proposes_saves_and_remembers_a_clips_settings(tmp_path, app):
    page = as_page(app)
    shown = page.get("/api/clips/clip/settings").get_json()
    assert shown["saved"] is False and shown["settings"] == shown["proposed"]
    assert set(shown["trades"]) == set(RunSettings.__dataclass_fields__)
    chosen = {**shown["settings"], "fast": True, "max_internal_size": 288}
    saved = page.post("/api/clips/clip/settings", json=chosen)
    assert saved.status_code == 200 and saved.get_json()["saved"] is True
    assert "--max_internal_size=288" in saved.get_json()["flags"]
    stored = tmp_path / "results" / ".app" / "settings" / "clip.json"
    assert json.loads(stored.read_text())["max_internal_size"] == 288
    # a new app on the same save folder remembers them
    again = as_page(create_app(AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN))).get("/api/clips/clip/settings")
    assert again.get_json()["settings"]["fast"] is True


def test_bad_or_unauthorised_settings_change_nothing(tmp_path, app):
    page = as_page(app)
    refused = page.post("/api/clips/clip/settings", json={"precision": "int4"})
    assert refused.status_code == 400 and "precision must be one of" in refused.get_json()["error"]
    assert stranger(app).post("/api/clips/clip/settings", json={"fast": True}).status_code == 403
    cookie_only = Client(app, cookie=app.extensions["trimap_guard"].session).post(
        "/api/clips/clip/settings", json={"fast": True}
    )
    assert cookie_only.status_code == 403  # the cookie alone changes nothing: the page's XSRF header is needed
    assert page.post("/api/clips/nope/settings", json={}).status_code == 404
    assert not (tmp_path / "results" / ".app" / "settings").exists()


def test_the_propagation_job_runs_with_the_clips_settings(tmp_path):
    config = AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN)
    (command,) = commands_for(config, "clip", "propagate", settings=RunSettings(fast=True, max_memory=4))
    assert command[1] == "workspace" and command[-2:] == ["--fast", "--max_memory=4"]
    (plain,) = commands_for(config, "clip", "propagate")
    assert not any(flag.startswith(("--fast", "--max_", "--precision", "--device")) for flag in plain)


def test_a_settings_file_that_is_no_plain_file_is_refused_with_what_to_do(tmp_path):
    store = SettingsStore(tmp_path / ".app")
    store.folder.mkdir(parents=True)
    store.path("dir").mkdir()  # a folder where the file should be
    with pytest.raises(UserError, match="not a regular file; delete it"):
        store.load("dir")
    (tmp_path / "elsewhere.json").write_text('{"fast": true}')
    store.path("linked").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(UserError, match="cannot be read as a settings file"):
        store.load("linked")
    store.path("big").write_text(" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(UserError, match="larger than a settings file"):
        store.load("big")
    store.path("bad").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        store.load("bad")
    long_name = "c" * 250  # a folder name the file system allows; "<name>.json" it does not
    store.save(long_name, RunSettings(fast=True))
    assert store.load(long_name) == RunSettings(fast=True) and len(store.path(long_name).name) < 100


def test_settings_are_not_saved_through_a_linked_settings_folder(tmp_path):
    (tmp_path / ".app").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / ".app" / "settings").symlink_to(tmp_path / "outside")
    with pytest.raises(UserError, match="is a link"):
        SettingsStore(tmp_path / ".app").save("clip", RunSettings())
    assert list((tmp_path / "outside").iterdir()) == []
