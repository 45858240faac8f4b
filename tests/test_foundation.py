"""Small behaviours everything relies on: file permissions, hidden files, progress lines, frame names."""

from __future__ import annotations

import io
import os
import stat
import subprocess

import numpy as np
import pytest

from dataset.clip import scan_clip, stems_with
from dataset.video import stem_digits
from utils.io import atomic_write_png, atomic_write_text
from utils.logs import progress

pytestmark = pytest.mark.unit


def test_outputs_get_the_permissions_of_an_ordinary_write(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as handle:  # what the umask of this process gives
        handle.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode)
    assert mode & stat.S_IRGRP, "results must be readable by the group on shared file systems"


def test_hidden_files_are_not_frames(tmp_path):
    image = np.zeros((8, 10, 3), np.uint8)
    for name in ("00000_rgb.png", "00001_rgb.png", "._00001_rgb.png", "00000_trimap.png", "._00000_trimap.png"):
        atomic_write_png(tmp_path / name, image)
    clip = scan_clip(tmp_path)
    assert clip.stems == ["00000", "00001"] and clip.keyframe_indices == [0]
    assert stems_with(tmp_path, "_rgb.png") == ["00000", "00001"]


def test_off_a_terminal_a_loop_prints_a_few_lines(tmp_path):
    log = io.StringIO()  # not a terminal
    with progress(total=500, file=log, mininterval=0) as bar:
        for step in range(500):
            bar.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)
            bar.update(1)
    assert 2 <= log.getvalue().count("\r") <= 12, log.getvalue()
    log = io.StringIO()
    for _ in progress(range(2000), file=log, mininterval=0):
        pass
    assert log.getvalue().count("\r") <= 12


@pytest.mark.parametrize(("frames", "digits"), [(10, 5), (100_000, 5), (100_001, 6), (2_500_000, 7), (None, 8)])
def test_extracted_frame_names_sort_in_frame_order(frames, digits):
    assert stem_digits(frames) == digits
    if frames:
        indices = [i for i in (0, 9, 10, 99_999, 100_000, frames - 2, frames - 1) if 0 <= i < frames]
        names = [f"{i:0{digits}d}" for i in sorted(set(indices))]
        assert sorted(names) == names


def test_a_unit_test_cannot_start_a_child_process():
    """The unit tier's guard (tests/conftest.py) is not blind: a child process fails the test."""
    with pytest.raises(AssertionError, match="marked unit but starts a child process"):
        subprocess.run(["true"], check=False)
