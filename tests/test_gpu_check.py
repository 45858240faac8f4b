"""bench/gpu_check.sh answers its questions in one call: its dry run (every step tiny on the CPU, the
inputs at full size, the CUDA tests skipped with their reason) passes here, its non-GPU parts fit
their limits, and its whole-process bench keeps every finished row and says when a row failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import bench.bench_whole as bench_whole
from helpers import REPO

PLANNED = ("install", "inputs", "facts", "tests", "whole-defaults", "tune", "read", "profile", "pipeline",
           "whole-more", "compile")  # fmt: skip


def step_seconds(steps: str) -> dict[str, float]:
    return {m[1]: float(m[3]) for m in re.finditer(r"== (\S+): exit (\d+) after ([\d.]+) s", steps)}


@pytest.mark.e2e
@pytest.mark.slow  # a minute: with the full demo in pytest -m slow, which .ci/run runs
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check, not the dry run")
def test_the_gpu_check_dry_run_passes_every_step_and_its_cpu_parts_fit(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="2")
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    steps = (tmp_path / "steps.txt").read_text()
    assert "gpu_check: all steps passed (dry run)" in steps
    log = (tmp_path / "log.txt").read_text()
    plan = dict(re.findall(r"^(\S+)\s+(\d+)  ", log, re.MULTILINE))
    assert tuple(plan) == PLANNED, "the plan names every step with its limit, in order"
    assert sum(map(int, [plan["install"], plan["inputs"]])) < 60
    seconds = step_seconds(steps)
    for name in ("install", "inputs"):  # not GPU work: what it takes here bounds it there
        assert seconds[name] <= int(plan[name]), f"{name} took {seconds[name]} s of its {plan[name]} s"
    returned = ["facts.json", "log.txt", "steps.txt", "tune.json", "whole.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == returned, "few files come back: five, and no clip"
    assert json.loads((tmp_path / "tune.json").read_text())["choice"] is not None
    assert "needs a CUDA GPU" in log, "the CUDA tests say why they skip"
    assert "40 frames of 1920x1088" in log, "the inputs are made at their full size"
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["versions"]["torch"] == torch.__version__
    assert {(r["heads"], r["dtype"]) for r in facts["attention"]} == {(1, "float32"), (4, "float32")}
    assert facts["syncs"]["visits_watched"] > 0 and facts["syncs"]["waiting_operators"] == {}
    rows = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["default", "fast", "bf16-no-autotune", "bf16"]
    assert all(r["status"] == "ok" and 0 < r["labels_vs_default"] <= 1 and r["propagation_s"] > 0 for r in rows)
    assert rows[1]["labels_vs_default"] > 0.99 and rows[0]["max_diff_255"] == 0
    assert "compare with the default row of an earlier run" in log, "the second step does not rerun fp32"
    for table in ("| variant |", "| size | T |", "share         ms   calls  operator", "| --n_threads |"):
        assert table in log, f"a step printed no table ({table})"


@pytest.mark.e2e
def test_the_plan_alone_runs_nothing(tmp_path):
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--plan"], cwd=REPO,
                         env=dict(os.environ, OUT=str(tmp_path)), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0 and all(name in run.stdout for name in PLANNED)
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]


@pytest.mark.e2e
def test_the_check_without_cuda_fails_instead_of_running_the_dry_run(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1 and "no CUDA GPU visible" in run.stdout
    assert "== install" not in (tmp_path / "log.txt").read_text()


@pytest.fixture
def fake_rows(tmp_path, monkeypatch):
    """bench_whole with its processes replaced: ``outcomes[variant]`` is "ok" (writes a part PNG of
    that variant's labels), "fail", "silent" (fails with no output) or "interrupt"."""
    outcomes = {}
    json_path = tmp_path / "rows.jsonl"

    def run(command, **kwargs):
        save = command[command.index("--save") + 1]
        variant = os.path.basename(save)  # bench_whole saves each variant under its name
        outcome = outcomes.get(variant, "ok")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        if outcome in ("fail", "silent"):
            text = "" if outcome == "silent" else "error: it broke"
            return subprocess.CompletedProcess(command, 2, "", text)
        part = os.path.join(save, "c_mem5", "part0")
        os.makedirs(part)
        image = np.zeros((4, 4, 3), np.uint8)
        image[..., 0 if variant == "default" else 1] = 255  # labels 0 against labels 1: every label differs
        cv2.imwrite(os.path.join(part, "00001_tri.png"), image)
        return subprocess.CompletedProcess(command, 0, "", "4 frames in 0.5 s (first visit 0.1 s)")

    inputs = tmp_path / "inputs"
    (inputs / "clip").mkdir(parents=True)
    cv2.imwrite(str(inputs / "clip" / "00000_rgb.png"), np.zeros((8, 8, 3), np.uint8))
    (inputs / "clip.yaml").write_text(f"DATASET:\n  PATH: '{inputs / 'clip'}'\n")
    monkeypatch.setattr(bench_whole.subprocess, "run", run)

    def main(variants: str) -> tuple[int, list[dict]]:
        argv = ["bench_whole", "--inputs", str(inputs), "--device", "cpu", "--variants", variants, "--json",
                str(json_path)]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        try:
            bench_whole.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        rows = [json.loads(line) for line in json_path.read_text().splitlines()] if json_path.exists() else []
        return code, rows

    return outcomes, main


@pytest.mark.unit
def test_a_failed_row_makes_the_bench_fail_and_keeps_the_others(fake_rows):
    outcomes, main = fake_rows
    outcomes["fast"] = "silent"  # exits 2 with an empty stderr
    code, rows = main("default,fast,bf16")
    assert code != 0
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "(no output)" in rows[1]["why"]
    assert rows[2]["labels_vs_default"] == 0.0, "bf16's labels all differ from the default's"


@pytest.mark.unit
def test_without_the_fp32_row_no_row_states_an_agreement(fake_rows, capsys):
    outcomes, main = fake_rows
    outcomes["default"] = "fail"
    code, rows = main("default,fast,bf16")
    assert code != 0
    assert [r["variant"] for r in rows] == ["default", "fast", "bf16"]
    assert all(r["labels_vs_default"] is None for r in rows), "fast must not become the reference"
    assert "no row states its agreement" in capsys.readouterr().out


@pytest.mark.unit
def test_rows_finished_before_an_interruption_are_kept(fake_rows):
    outcomes, main = fake_rows
    outcomes["bf16"] = "interrupt"
    code, rows = main("default,fast,bf16,fp16")
    assert code == 130 and [r["variant"] for r in rows] == ["default", "fast"]
