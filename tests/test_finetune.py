"""Online finetuning: the keyframe sampler and the training run."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from config import load_config
from dataset.clip import scan_clip
from dataset.finetune import IGNORE_LABEL, MEAN_COLOUR, KeyframeClips, warp_frame, warp_labels
from dataset.prepare import normalise_frame
from dataset.synthetic import make_synthetic_clip
from dataset.trimap import UNKNOWN
from helpers import FIXTURES, run_main, write_cfg
from model.checkpoint import save_checkpoint
from model.stm import STM
from model.weights import trainable_random_init
from training.loop import finetune
from training.optim import is_frozen, learning_rate
from utils.errors import UserError


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("ft")
    return make_synthetic_clip(workspace, "ftclip", num_frames=8, size=(72, 96), keyframes=(0, 5), seed=5)


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory):
    """A random start that trains (see trainable_random_init), saved as a checkpoint."""
    torch.manual_seed(0)
    model = STM()
    trainable_random_init(model)
    path = tmp_path_factory.mktemp("start") / "start.pth"
    save_checkpoint(model, path)
    return path


def small_cfg(tmp_path, clip_dir, start_checkpoint, steps=2, **extra):
    overrides = {
        "SYSTEM.NUM_WORKERS": 0,
        "SYSTEM.RANDOM_SEED": 7,
        "SYSTEM.OUTDIR": str(tmp_path / "log"),
        "TRAIN.TRAIN_INPUT_SIZE": (64, 64),
        "TRAIN.TOTAL_STEPS": steps,
        "TRAIN.BASE_LR": 1e-4,
        "TRAIN.LOAD_CKPT": str(start_checkpoint),
        "TRAIN.IMAGE_FREQ": 1,
        "FINETUNE.SAVE_FREQ": -1,
        "FINETUNE.MIN_UNKNOWN_PIXELS": 100,
    }
    overrides.update(extra)
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = write_cfg(tmp_path / "run.yaml", clip_dir.folder)
    flat = [str(x) for kv in overrides.items() for x in kv]
    return load_config(cfg_path, flat), cfg_path


def run(cfg, cfg_path):
    clip = scan_clip(cfg.DATASET.PATH, cfg.FINETUNE.GT_IDX)
    return finetune(cfg, cfg_path, clip, torch.device("cpu"))


@pytest.fixture(scope="module")
def one_plain_step(tmp_path_factory, clip_dir, start_checkpoint):
    """One seeded Adam step in fp32 from the random start: the reference the variants are compared with
    (read only; made once for the module, a training run writes about 470 MB of checkpoint and optimizer)."""
    return run(*small_cfg(tmp_path_factory.mktemp("plain"), clip_dir, start_checkpoint, steps=1))


# --- the keyframe sampler ------------------------------------------------------------------------


def sampler(clip_dir, **kwargs):
    clip = scan_clip(clip_dir.folder)
    return KeyframeClips(clip, (64, 48), min_unknown=kwargs.pop("min_unknown", 100), length=40, seed=1, **kwargs)


@pytest.mark.unit
def test_samples_are_three_cropped_frames_with_valid_labels(clip_dir):
    data = sampler(clip_dir)
    for i in range(20):
        sample = data[i]
        assert sample["frames"].shape == (3, 3, 48, 64)
        assert sample["labels"].shape == (3, 48, 64)
        values = set(np.unique(sample["labels"].numpy()))
        assert values <= {0, 1, 2, IGNORE_LABEL}
        for t in range(3):
            assert (sample["labels"][t] == UNKNOWN).sum() >= 100, "crop must hold the required unknown pixels"


@pytest.mark.unit
def test_samples_repeat_for_the_same_seed_and_index(clip_dir):
    a, b = sampler(clip_dir), sampler(clip_dir)
    assert torch.equal(a[3]["frames"], b[3]["frames"])
    assert not torch.equal(a[3]["frames"], a[4]["frames"])


@pytest.mark.unit
def test_pixels_warped_in_from_outside_are_ignored_and_mean_coloured():
    labels = np.ones((40, 40), np.uint8)
    frame = np.full((40, 40, 3), 200, np.uint8)
    shift = np.array([[1, 0, 10], [0, 1, 0], [0, 0, 1]], float)  # move right by 10 px
    warped_labels = warp_labels(labels, shift)
    warped_frame = warp_frame(frame, shift)
    assert (warped_labels[:, :10] == IGNORE_LABEL).all() and (warped_labels[:, 10:] == 1).all()
    assert (warped_frame[:, :10] == MEAN_COLOUR).all()
    assert np.abs(normalise_frame(warped_frame[:, :10])).max() < 0.02  # the mean colour normalises to ~0


@pytest.mark.unit
def test_a_thin_unknown_band_fails_with_a_message_instead_of_looping(clip_dir):
    with pytest.raises(UserError, match=r"ftclip/00000_trimap\.png has \d+ unknown pixels"):
        sampler(clip_dir, min_unknown=10**6)


@pytest.mark.unit
def test_a_crop_that_cannot_hold_enough_unknown_pixels_fails_naming_the_keyframe(tmp_path):
    clip = make_synthetic_clip(tmp_path, "thin", num_frames=3, size=(96, 96), keyframes=(0,), unknown_width=1)
    data = KeyframeClips(scan_clip(clip.folder), (16, 16), min_unknown=200, length=2, seed=0)
    with pytest.raises(UserError, match=r"keyframe .*thin/00000_trimap\.png: no 16x16 crop"):
        data[0]


@pytest.mark.unit
def test_a_crop_larger_than_the_frames_is_refused(clip_dir):
    with pytest.raises(UserError, match=r"TRAIN_INPUT_SIZE \(512, 512\)"):
        KeyframeClips(scan_clip(clip_dir.folder), (512, 512))


# --- the training run ----------------------------------------------------------------------------


@pytest.mark.unit
def test_learning_rate_strategies():
    assert learning_rate(5, 1e-3, "const", 10) == 1e-3
    assert learning_rate(0, 1e-3, "poly", 10) == 1e-3
    assert learning_rate(10, 1e-3, "poly", 10) == 0
    assert learning_rate(4, 1e-3, "stair", 12) == pytest.approx(1e-4)
    with pytest.raises(UserError, match="LR_STRATEGY"):
        learning_rate(0, 1e-3, "cosine", 10)


@pytest.mark.e2e
def test_finetuning_keeps_batch_norm_frozen_and_trains_the_rest(tmp_path, clip_dir, start_checkpoint):
    before = torch.load(start_checkpoint)
    result = run(*small_cfg(tmp_path, clip_dir, start_checkpoint))
    after = torch.load(result.checkpoint)
    spec = json.loads((FIXTURES / "state_dict_keys.json").read_text())
    assert list(after) == [name for name, _, _ in spec]
    assert result.checkpoint.name == "checkpoint_2.pth.tar"
    for name, tensor in before.items():
        frozen = "bn" in name or "running_" in name or "num_batches" in name or name.endswith((".mean", ".std"))
        if frozen:
            assert torch.equal(after[name], tensor), f"{name} changed"
        else:
            assert not torch.equal(after[name], tensor), f"{name} did not change"
    assert not is_frozen("Encoder_Q.res2.0.downsample.1.weight", False)  # published quirk kept
    assert (result.run_dir / "config.yaml").exists() and (result.run_dir / "train.log").exists()
    assert sorted(p.name for p in (result.run_dir / "training_images").iterdir()) == [
        "step_000001.png",
        "step_000002.png",
    ]


@pytest.mark.e2e
def test_seeded_runs_repeat_exactly_and_resume_continues(tmp_path, clip_dir, start_checkpoint):
    straight = run(*small_cfg(tmp_path / "a", clip_dir, start_checkpoint, steps=3))
    again = run(*small_cfg(tmp_path / "b", clip_dir, start_checkpoint, steps=3))
    a, b = torch.load(straight.checkpoint), torch.load(again.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a), "seeded runs differ"

    first = run(*small_cfg(tmp_path / "c", clip_dir, start_checkpoint, steps=1))
    resumed = run(
        *small_cfg(
            tmp_path / "c",
            clip_dir,
            first.checkpoint,
            steps=3,
            **{"TRAIN.LOAD_OPT": str(first.run_dir / "optimizer_1.pth.tar")},
        )
    )
    assert resumed.checkpoint.name == "checkpoint_3.pth.tar"
    assert "resuming from" in (resumed.run_dir / "train.log").read_text()
    c = torch.load(resumed.checkpoint)
    assert all(torch.equal(a[k], c[k]) for k in a), "a resumed run must equal the uninterrupted run"


@pytest.mark.e2e
def test_loss_goes_down_over_a_longer_run(tmp_path, clip_dir, start_checkpoint):
    cfg, cfg_path = small_cfg(
        tmp_path, clip_dir, start_checkpoint, steps=24, **{"TRAIN.PRINT_FREQ": 1, "TRAIN.IMAGE_FREQ": 0}
    )
    result = run(cfg, cfg_path)
    losses = [float(x) for x in re.findall(r"step \d+/\d+ loss (\d+\.\d+)", (result.run_dir / "train.log").read_text())]
    assert len(losses) == 24
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6]), losses


@pytest.mark.e2e
def test_finetune_then_propagate_then_ensemble_from_the_command_line(tmp_path, clip_dir, start_checkpoint):
    cfg = write_cfg(tmp_path / "clip.yaml", clip_dir.folder)
    common = ["SYSTEM.OUTDIR", tmp_path / "log", "SYSTEM.NUM_WORKERS", 1, "TRAIN.TRAIN_INPUT_SIZE", "(64, 64)"]
    train = run_main(
        "online_finetune_test.py", "--cfg", cfg, *common, "TRAIN.TOTAL_STEPS", 2,
        "TRAIN.LOAD_CKPT", start_checkpoint, "FINETUNE.MIN_UNKNOWN_PIXELS", 100,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    checkpoint = tmp_path / "log" / "clip" / "checkpoint_2.pth.tar"
    assert f"checkpoint: {checkpoint}" in train.stderr.splitlines()[-1]
    propagate = run_main("test_mf_2.py", "--cfg", cfg, "--load", checkpoint, "--save", tmp_path / "out")
    assert propagate.returncode == 0, propagate.stderr
    fuse = run_main("ensemble.py", "--predroot", tmp_path / "out", "--dataroot", clip_dir.folder.parent)
    assert fuse.returncode == 0, fuse.stderr
    assert len(list((tmp_path / "out" / "ftclip_mem5" / "ensemble").glob("*_trimap.png"))) == 8


def changed_tensors(before: dict, after: dict) -> set[str]:
    return {name for name, tensor in before.items() if not torch.equal(after[name], tensor)}


@pytest.mark.e2e
def test_freeze_backbone_freezes_the_trunks_but_not_the_mask_convolutions(tmp_path, clip_dir, start_checkpoint):
    before = torch.load(start_checkpoint)
    result = run(*small_cfg(tmp_path, clip_dir, start_checkpoint, steps=1, **{"TRAIN.FREEZE_BACKBONE": True}))
    changed = changed_tensors(before, torch.load(result.checkpoint))
    trunk = {n for n in before if n.startswith(("Encoder_M.", "Encoder_Q.")) and not n.endswith((".mean", ".std"))}
    assert changed & trunk == {"Encoder_M.conv1_m.weight", "Encoder_M.conv1_o.weight"}
    assert {"KV_M_r4.Key.weight", "Decoder.pred2.weight"} <= changed


@pytest.mark.e2e
def test_sgd_trains_other_weights_than_adam(tmp_path, clip_dir, start_checkpoint, one_plain_step):
    adam = one_plain_step
    sgd = run(*small_cfg(tmp_path / "sgd", clip_dir, start_checkpoint, steps=1, **{"TRAIN.OPTIMIZER": "sgd"}))
    before, with_sgd = torch.load(start_checkpoint), torch.load(sgd.checkpoint)
    assert "Decoder.pred2.weight" in changed_tensors(before, with_sgd)
    assert changed_tensors(torch.load(adam.checkpoint), with_sgd), "sgd and adam made the same step"
    assert "sgd lr" in (sgd.run_dir / "train.log").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides",
    [{"TRAIN.CHANNELS_LAST": True}, {"TRAIN.PRECISION": "bf16"}],
    ids=["channels_last", "bf16"],
)
def test_training_step_variants_take_the_same_step_within_rounding(
    tmp_path, clip_dir, start_checkpoint, overrides, one_plain_step
):
    plain = one_plain_step
    variant = run(*small_cfg(tmp_path / "variant", clip_dir, start_checkpoint, steps=1, **overrides))
    assert math.isfinite(variant.last_loss)
    assert variant.last_loss == pytest.approx(plain.last_loss, rel=0.05)
    before, a, b = torch.load(start_checkpoint), torch.load(plain.checkpoint), torch.load(variant.checkpoint)
    name = "Decoder.pred2.weight"  # the step each made on the prediction head points the same way
    step_a, step_b = (a[name] - before[name]).flatten(), (b[name] - before[name]).flatten()
    assert torch.nn.functional.cosine_similarity(step_a, step_b, dim=0) > 0.9
