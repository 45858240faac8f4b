"""Commands that need no network start without importing torch: --help, extract,
trimap, encode, evaluate. Each runs in a fresh interpreter, which then reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import REPO

pytestmark = pytest.mark.e2e

HEAVY = ("torch", "scipy", "pymatting", "numba")
# Runs the dispatcher as `python tgm.py ARGS` does, then prints which heavy modules were imported.
PROBE = f"""
import json, sys
import commands
try:
    commands.cli(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({{"code": code, "imported": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def imports_of(*args: object) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    mask = np.zeros((40, 56), np.uint8)
    mask[10:30, 20:40] = 255
    cv2.imwrite(str(folder / "a_mask.png"), mask)
    frame = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "frame.png"), frame)
    (folder / "seq").mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / "seq" / f"{index:05d}_comp.png"), frame)
    return folder


def test_the_command_list_and_the_light_commands_help_import_no_torch():
    for args in (["--help"], ["trimap", "--help"], ["extract", "--help"], ["encode", "--help"], ["evaluate", "--help"]):
        result = imports_of(*args)
        assert result == {"code": 0, "imported": []}, (args, result)


def test_trimap_encode_extract_and_evaluate_run_without_torch(inputs):
    folder = inputs
    runs = [
        ["trimap", "from-mask", folder / "a_mask.png", "--out", folder / "a_trimap.png"],
        ["trimap", "from-box", folder / "frame.png", "--box", "10,5,40,30", "--out", folder / "b_trimap.png"],
        ["trimap", "check", folder / "a_trimap.png"],
        ["encode", "--images_dir", folder / "seq", "--suffix", "_comp.png", "--out", folder / "seq.mkv"],
        ["extract", folder / "seq.mkv", "--out", folder / "clip"],
        ["evaluate", "--pred", folder, "--gt", folder],
    ]
    for args in runs:
        result = imports_of(*args)
        assert result == {"code": 0, "imported": []}, (args, result)
    assert (folder / "clip" / "00002_rgb.png").exists()


def test_the_probe_sees_torch_when_a_command_imports_it():
    """Negative control: a command that needs the network does import torch, and the probe says so."""
    result = imports_of("propagate", "--cfg", "/nonexistent.yaml", "--load", "x.pth", "--save", "out")
    assert "torch" in result["imported"]
