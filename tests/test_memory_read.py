"""The memory read that long memories and HD footage take (torch's fused attention), end to end on real clips."""

from __future__ import annotations

import copy
import functools

import cv2
import numpy as np
import pytest
import torch

import model.stm as stm
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.driver import configure_model, propagate_clip
from inference.options import PropagationOptions
from model.stm import READ_BUDGET_BYTES, MemoryEntry, read_memory_bounded, read_memory_fused, read_memory_naive

CPU = torch.device("cpu")


def result_pngs(result) -> dict[str, np.ndarray]:
    return {
        p.relative_to(result.path).as_posix(): cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        for p in sorted(result.path.glob("part*/*.png"))
    }


def propagate_with_budget(parity_model, clip, save, read_budget: int, options: PropagationOptions):
    model = configure_model(copy.deepcopy(parity_model), options, CPU)  # the default path: bounded read
    model.read_budget = read_budget
    return result_pngs(propagate_clip(model, clip, save, options, CPU).result)


@pytest.fixture
def fused_spy(monkeypatch):
    """Counts the calls of the fused read (the bounded read's path beyond its budget)."""
    calls = []
    original = stm.read_memory_fused

    def spy(*args, **kwargs):
        calls.append(len(args[0]))  # memory entries read
        return original(*args, **kwargs)

    monkeypatch.setattr(stm, "read_memory_fused", spy)
    return calls


def assert_within_rounding(fused: dict, materialised: dict) -> None:
    """Float rounding, which the loud parity weights amplify on a few borderline pixels: stricter
    than the shared parity tolerances (2 levels on 99.9% of values, mean 0.25 levels)."""
    assert fused.keys() == materialised.keys()
    diffs = [np.abs(fused[k].astype(int) - materialised[k]) for k in fused]
    within = np.mean([(d <= 2).mean() for d in diffs])
    agree = np.mean([(fused[k].argmax(2) == materialised[k].argmax(2)).mean() for k in fused])
    assert within > 0.9999, f"only {within:.6f} of the values within 2 levels"
    assert np.mean([d.mean() for d in diffs]) < 0.01
    assert agree > 0.9999


@pytest.mark.unit
def test_fused_read_forced_by_a_small_budget_matches_the_materialised_read(tmp_path, parity_model, fused_spy):
    sample = make_synthetic_clip(tmp_path / "ws", "clip", num_frames=9, size=(44, 58), keyframes=(2, 6), seed=3)
    clip = scan_clip(sample.folder)
    options = PropagationOptions(mem_every=1)
    materialised = propagate_with_budget(parity_model, clip, tmp_path / "a", READ_BUDGET_BYTES, options)
    assert fused_spy == [], "the default budget holds this small clip's affinity"
    fused = propagate_with_budget(parity_model, clip, tmp_path / "b", 1, options)
    assert len(fused_spy) == 10 and max(fused_spy) == 4  # all 10 segment steps, up to 4 entries
    assert_within_rounding(fused, materialised)


@pytest.mark.e2e
def test_the_default_budget_switches_to_the_fused_read_at_480x896(tmp_path, parity_model, fused_spy):
    # 480x896 is 30x56 = 1680 positions at stride 16: the affinity of 2 objects x T entries takes
    # 8 * T * 1680^2 bytes, 43.1 MiB for T = 2 and 64.6 MiB (> 64 MiB) for T = 3.
    sample = make_synthetic_clip(tmp_path / "ws", "hd", num_frames=4, size=(480, 896), keyframes=(0,), seed=5)
    clip = scan_clip(sample.folder)
    options = PropagationOptions(mem_every=1)
    fused = propagate_with_budget(parity_model, clip, tmp_path / "a", READ_BUDGET_BYTES, options)
    assert fused_spy == [3], "frame 3 reads 3 entries: the first read past the default budget"
    materialised = propagate_with_budget(parity_model, clip, tmp_path / "b", 2**40, options)
    assert fused_spy == [3], "an unlimited budget materialises every read"
    assert_within_rounding(fused, materialised)


@pytest.mark.unit
def test_the_read_runs_in_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    # bf16-valued inputs, as the encoders make them under autocast; scores in bf16 would round
    # away the small differences between these keys
    keys = [(torch.randn(2, 128, 6, 7, generator=g) * 3).bfloat16() for _ in range(3)]
    memory = [MemoryEntry(k, torch.randn(2, 512, 6, 7, generator=g).bfloat16()) for k in keys]
    query_key = (torch.randn(2, 128, 6, 7, generator=g) * 3).bfloat16()
    query_value = torch.randn(2, 512, 6, 7, generator=g).bfloat16()
    reference_memory = [MemoryEntry(e.keys.float(), e.values.float()) for e in memory]
    reference = read_memory_naive(reference_memory, query_key.float(), query_value.float())
    # (the read comes back in the query value's dtype: an fp32 value keeps bf16's output rounding
    # out of the comparison, so the comparison sees how the read itself was computed)
    for budget in (READ_BUDGET_BYTES, 1):  # materialised and fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            read = read_memory_bounded(memory, query_key, query_value.float(), budget)
        torch.testing.assert_close(read[:, :512], reference[:, :512], rtol=0, atol=1e-4)
    # the negative control: the same read computed in bf16 misses that tolerance by far
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = read_memory_fused(memory, query_key, query_value.float(), dtype=torch.bfloat16)
    assert (half[:, :512] - reference[:, :512]).abs().max() > 1e-3


@pytest.mark.unit
def test_the_fused_read_follows_autocast_only_where_asked_and_only_on_cuda(parity_model):
    g = torch.Generator().manual_seed(1)
    keys = [(torch.randn(2, 128, 6, 7, generator=g) * 3).bfloat16() for _ in range(3)]
    memory = [MemoryEntry(k, torch.randn(2, 512, 6, 7, generator=g).bfloat16()) for k in keys]
    query_key = (torch.randn(2, 128, 6, 7, generator=g) * 3).bfloat16()
    query_value = torch.randn(2, 512, 6, 7, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32 = read_memory_bounded(memory, query_key, query_value, 1)
        half = read_memory_bounded(memory, query_key, query_value, 1, follow_autocast=True)
    assert fp32.dtype == half.dtype == torch.bfloat16  # the read is cast back like the query value
    assert not torch.equal(half, fp32), "the half-precision read is another computation"
    plain = read_memory_bounded(memory, query_key, query_value, 1)
    followed = read_memory_bounded(memory, query_key, query_value, 1, follow_autocast=True)
    assert torch.equal(followed, plain), "no autocast: fp32 either way"
    for device, precision, follows in ((CPU, "bf16", False), (torch.device("cuda", 0), "bf16", True),
                                       (torch.device("cuda", 0), "fp32", False)):  # fmt: skip
        options = PropagationOptions(precision=precision)
        model = copy.deepcopy(parity_model)
        model.to = functools.partial(lambda same, *args, **kwargs: same, model)  # no CUDA here: the switch only
        assert configure_model(model, options, device).read_follows_autocast is follows, (device, precision)
