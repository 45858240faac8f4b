"""An interrupted propagation leaves only complete files, and a rerun completes.

The run is interrupted at an event, not by racing it: as soon as its third probability PNG
exists the child is frozen (SIGSTOP), Ctrl-C is queued and it is thawed (SIGCONT), so however
fast the machine, the run cannot finish before the interrupt reaches it. A suite started ignoring
Ctrl-C (a script's ``pytest &``) takes it back first (``tests/conftest.py``): the child would
inherit the ignoring and never see the interrupt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from dataset.synthetic import make_synthetic_clip
from helpers import REPO, run_script, write_cfg

pytestmark = pytest.mark.e2e


def test_sigint_leaves_complete_pngs_and_a_rerun_finishes(tmp_path, parity_weights):
    frames = 40
    clip = make_synthetic_clip(tmp_path / "ws", "long", num_frames=frames, size=(64, 96), keyframes=(0,), seed=6)
    cfg = write_cfg(tmp_path / "c.yaml", clip.folder)
    out = tmp_path / "out"
    args = ["test_mf_2.py", "--cfg", str(cfg), "--load", str(parity_weights), "--save", str(out)]
    process = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )
    part = out / "long_mem5" / "part0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(part.glob("*_tri.png"))) < 3 and process.poll() is None:
        time.sleep(0.002)
    process.send_signal(signal.SIGSTOP)  # the event: three frames written; freeze the run there
    assert process.poll() is None, "the run ended before its third frame was seen"
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    written = sorted(part.glob("*.png"))
    assert 3 <= len(written) < frames, "interrupted runs stop part-way"
    for png in written:
        assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED) is not None, f"{png.name} is incomplete"
    assert not (out / "long_mem5" / "conf.json").exists(), "an unfinished run has no conf.json"

    rerun = run_script(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(part.glob("*_tri.png"))) == frames
    assert (out / "long_mem5" / "conf.json").exists()
    assert not list(part.glob(".*")), "no temporary files are left behind"
