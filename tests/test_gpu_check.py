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
    lines = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert {line["path"] for line in lines} >= {"naive", "default-unshared", "default"}
    assert "torch" in (tmp_path / "gpu.txt").read_text()
