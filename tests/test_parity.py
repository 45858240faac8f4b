"""The shared parity case: our scripts against the published implementation's outputs."""

from __future__ import annotations

import shutil

from helpers import FIXTURES, compare_results, run_script, write_cfg

CASE = FIXTURES / "parity_case1"


def test_parity_case_matches_published_outputs(tmp_path, parity_weights):
    workspace = tmp_path / "workspace"
    shutil.copytree(CASE / "workspace", workspace)
    cfg = write_cfg(tmp_path / "parity.yaml", workspace / "parity_clip")
    out = tmp_path / "out"
    run = run_script(
        "test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", out, "--mem_every", "1", "--max_memory", "3"
    )
    assert run.returncode == 0, run.stderr
    run = run_script("ensemble.py", "--predroot", out, "--dataroot", workspace)
    assert run.returncode == 0, run.stderr
    problems = compare_results(CASE / "expected" / "parity_clip_mem1", out / "parity_clip_mem1")
    assert problems == []
    assert len(list((out / "parity_clip_mem1" / "envis").glob("*.png"))) == 16
