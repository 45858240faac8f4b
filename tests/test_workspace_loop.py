"""tgm.py workspace as the correction loop: reruns redo what changed and nothing else (in this process: seven
runs of the command, each as a user types it, without a new Python and torch for each)."""

from __future__ import annotations

import json
import shutil

import pytest

from dataset.synthetic import make_synthetic_clip
from helpers import ONE_STEP_FINETUNE_YAML, run_main

pytestmark = pytest.mark.e2e


@pytest.fixture
def workspace(tmp_path):
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=9, size=(40, 56), keyframes=(0, 4, 8), seed=2,
                        gt_root=tmp_path / "gt")  # fmt: skip
    base = tmp_path / "base.yaml"
    base.write_text(ONE_STEP_FINETUNE_YAML)
    return tmp_path / "ws", base, tmp_path / "gt"


def run(tmp_path, ws, base, *extra):
    result = run_main("tgm.py", "workspace", "--workspace", ws, "--save", tmp_path / "r", "--cfg", base, *extra)
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads((tmp_path / "r" / "summary.json").read_text())
    return outcome, result


def test_reruns_redo_what_changed(tmp_path, workspace):
    ws, base, gt = workspace
    first, out = run(tmp_path, ws, base)
    assert first["status"] == "done" and first["parts"] == "4 new / 4" and first["detail"] == "finetuned"
    assert "clip: annotate next: " in out.stdout and first["suggested"]
    again, out = run(tmp_path, ws, base)
    assert again["status"] == "skipped" and again["parts"] == "0 new / 4"
    assert "finetuning already done" in out.stderr

    # a new keyframe: the finetuning is kept on request, and only the parts it touches are computed
    shutil.copy(gt / "clip" / "00006_trimap.png", ws / "clip" / "00006_trimap.png")
    kept, _ = run(tmp_path, ws, base, "--keep_finetuned")
    assert kept["status"] == "done" and kept["parts"] == "4 new / 6" and kept["finetune_s"] == 0
    # ... refined from the last checkpoint on request
    refined, out = run(tmp_path, ws, base, "--refine_steps", "1")
    assert refined["detail"].startswith("refined checkpoint_1.pth.tar") and refined["parts"] == "6 new / 6"
    assert (tmp_path / "r" / "train_log" / "clip_refined" / "checkpoint_1.pth.tar").exists()
    assert run(tmp_path, ws, base)[0]["status"] == "skipped", "the refined finetuning is now the current one"

    # another config: finetuned afresh; another checkpoint given with --load: propagated again
    changed, _ = run(tmp_path, ws, base, "TRAIN.BASE_LR", "1e-5")
    assert changed["detail"] == "finetuned afresh (inputs changed)" and changed["parts"] == "6 new / 6"
    loaded, _ = run(
        tmp_path, ws, base, "--load", tmp_path / "r" / "train_log" / "clip_refined" / "checkpoint_1.pth.tar"
    )
    assert loaded["status"] == "done" and loaded["parts"] == "6 new / 6" and loaded["finetune_s"] == 0
