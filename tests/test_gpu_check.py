"""bench/gpu_check.sh cannot rot between the sessions that are lent a GPU: its dry run (every step,
tiny and on the CPU, the CUDA tests skipped with their reason) runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check, not the dry run")
def test_the_gpu_check_dry_run_passes_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="2")
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "gpu_check: all steps passed (dry run)" in (tmp_path / "steps.txt").read_text()
    assert "needs a CUDA GPU" in (tmp_path / "tests.txt").read_text(), "the CUDA tests say why they skip"
    lines = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert [line["variant"] for line in lines] == ["default", "fast", "bf16-no-autotune"]
    assert lines[0]["labels_vs_default"] == 1.0 and lines[1]["labels_vs_default"] > 0.99  # fp32, then --fast
    assert all(0 < line["labels_vs_default"] <= 1 and line["propagation_s"] > 0 for line in lines)
    for step in ("profile", "read", "pipeline"):
        assert "|" in (tmp_path / f"{step}.txt").read_text(), f"the {step} step printed its table"
    assert "torch" in (tmp_path / "gpu.txt").read_text()
