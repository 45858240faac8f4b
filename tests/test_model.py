"""The STM network: checkpoint names, loading, padding, memory read, aggregation."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch

from helpers import FIXTURES
from model.checkpoint import load_checkpoint
from model.stm import (
    STM,
    MemoryEntry,
    MemoryStack,
    crop_padding,
    pad_to_multiple,
    read_memory_bounded,
    read_memory_fused,
    read_memory_naive,
    soft_aggregate,
)
from model.weights import parity_state_dict
from utils.errors import UserError

pytestmark = pytest.mark.unit


def test_state_dict_has_the_published_names_shapes_and_dtypes():
    spec = json.loads((FIXTURES / "state_dict_keys.json").read_text())
    state = STM().state_dict()
    assert list(state) == [name for name, _, _ in spec]
    for name, shape, dtype in spec:
        assert list(state[name].shape) == shape, name
        assert str(state[name].dtype) == f"torch.{dtype}", name


@pytest.fixture(scope="module")
def weights():
    return parity_state_dict(STM())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": sd, "epoch": 150},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "module-prefix", "state_dict", "state_dict+module"],
)
def test_checkpoint_formats_load(tmp_path, weights, wrap):
    torch.save(wrap(weights), tmp_path / "w.pth")
    model = STM()
    load_checkpoint(model, tmp_path / "w.pth")
    assert all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)


def test_old_checkpoints_without_batchnorm_counters_load(tmp_path, weights):
    torch.save({k: v for k, v in weights.items() if "num_batches_tracked" not in k}, tmp_path / "w.pth")
    load_checkpoint(STM(), tmp_path / "w.pth")


def test_missing_tensors_are_named_and_refused(tmp_path, weights):
    partial = {k: v for k, v in weights.items() if not k.startswith("Decoder.pred2")}
    torch.save(partial, tmp_path / "w.pth")
    with pytest.raises(UserError, match=r"2 tensors missing \(Decoder.pred2.weight, Decoder.pred2.bias\)"):
        load_checkpoint(STM(), tmp_path / "w.pth")


def test_shape_mismatches_are_named(tmp_path, weights):
    bad = dict(weights)
    bad["KV_M_r4.Key.weight"] = torch.zeros(64, 1024, 3, 3)
    torch.save(bad, tmp_path / "w.pth")
    with pytest.raises(UserError, match=r"KV_M_r4.Key.weight: \(64, 1024, 3, 3\) != \(128, 1024, 3, 3\)"):
        load_checkpoint(STM(), tmp_path / "w.pth")


def test_unexpected_tensors_are_reported_and_ignored(tmp_path, weights):
    extra = dict(weights)
    extra["Decoder.pred3.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "w.pth")
    report = load_checkpoint(STM(), tmp_path / "w.pth")
    assert report.unexpected == ["Decoder.pred3.weight"]


def test_a_file_that_is_not_a_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "w.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch file"):
        load_checkpoint(STM(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(STM(), tmp_path / "missing.pth")


def test_padding_to_16_is_centred_and_cropped_back():
    x = torch.arange(5 * 7, dtype=torch.float32).view(1, 1, 5, 7)
    padded, pads = pad_to_multiple(x, 16)
    assert padded.shape == (1, 1, 16, 16)
    assert pads == (4, 5, 5, 6)  # left, right, top, bottom: the odd pixel goes right/bottom
    assert torch.equal(crop_padding(padded, pads), x)


def random_memory(steps: int, seed: int = 0, size=(4, 5)):
    g = torch.Generator().manual_seed(seed)
    memory = [
        MemoryEntry(torch.randn(2, 128, *size, generator=g), torch.randn(2, 512, *size, generator=g))
        for _ in range(steps)
    ]
    return memory, torch.randn(2, 128, *size, generator=g), torch.randn(2, 512, *size, generator=g)


def test_naive_read_puts_the_read_first_and_the_query_value_second():
    memory, qk, qv = random_memory(3)
    naive = read_memory_naive(memory, qk, qv)
    assert naive.shape == (2, 1024, 4, 5)
    assert torch.equal(naive[:, 512:], qv)
    # one memory entry whose keys all match the query equally: the read is the mean value
    flat = [MemoryEntry(torch.zeros(2, 128, 4, 5), memory[0].values)]
    mean = memory[0].values.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 5)
    torch.testing.assert_close(read_memory_naive(flat, qk, qv)[:, :512], mean)


def test_bounded_read_is_the_naive_read_while_the_affinity_fits():
    memory, qk, qv = random_memory(3)
    assert torch.equal(read_memory_bounded(memory, qk, qv), read_memory_naive(memory, qk, qv))


@pytest.mark.parametrize("heads", [None, 1, 4], ids=["device", "one-head", "four-heads"])
def test_the_fused_read_matches_the_naive_read(heads):
    memory, qk, qv = random_memory(5, seed=1)
    fused = read_memory_fused(memory, qk, qv, value_heads=heads)
    torch.testing.assert_close(fused, read_memory_naive(memory, qk, qv), rtol=1e-5, atol=1e-5)
    assert torch.equal(fused[:, 512:], qv)
    # the negative control: the values' channels in another order are not the read
    shuffled = [MemoryEntry(e.keys, e.values.roll(1, dims=1)) for e in memory]
    assert not torch.allclose(read_memory_fused(shuffled, qk, qv, value_heads=heads), fused, atol=1e-3)


def test_bounded_read_beyond_its_budget_is_the_fused_read():
    memory, qk, qv = random_memory(5, seed=1)
    assert torch.equal(read_memory_bounded(memory, qk, qv, budget_bytes=1), read_memory_fused(memory, qk, qv))


def test_a_memory_stack_serves_the_fused_read_without_a_copy_and_keeps_the_entries():
    memory, qk, qv = random_memory(6, seed=3)
    stack = MemoryStack(capacity=1)  # grows twice on the way (1 -> 2 -> 4 -> 8)
    stored = [stack.add(entry) for entry in memory]
    assert stack.capacity == 8 and [e.slot for e in stored] == list(range(6))
    for entry, kept in zip(memory, stored):
        assert torch.equal(kept.keys, entry.keys) and torch.equal(kept.values, entry.values)
    # the naive read of the stored views is the naive read of the entries, bit for bit
    assert torch.equal(read_memory_naive(stored, qk, qv), read_memory_naive(memory, qk, qv))
    # drop two (the last entry moves into a freed slot), then the read takes the buffers' prefix
    stack.release(stored[1])
    stack.release(stored[4])
    live = [stored[i] for i in (0, 2, 3, 5)]
    assert sorted(e.slot for e in live) == [0, 1, 2, 3] and torch.equal(live[3].keys, memory[5].keys)
    keys, values = stack.prefix(live)
    assert values.data_ptr() == stack.values.data_ptr()
    assert keys.data_ptr() == stack.keys.data_ptr() and keys.shape[1] == 4 * 20, "a view of the buffer, no copy"
    expected = read_memory_naive([memory[i] for i in (0, 2, 3, 5)], qk, qv)
    torch.testing.assert_close(read_memory_fused(live, qk, qv), expected, rtol=1e-5, atol=1e-5)
    # the negative control: a list that is not the stack's prefix is gathered, not taken from it
    assert stack.prefix(live[:3]) is None
    torch.testing.assert_close(read_memory_fused(live[:3], qk, qv), read_memory_naive(live[:3], qk, qv),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_a_memory_stack_holds_fp32_or_the_entries_own_dtype():
    memory, _, _ = random_memory(2, seed=4)
    half = [MemoryEntry(e.keys.bfloat16(), e.values.bfloat16()) for e in memory]
    assert MemoryStack(2).add(half[0]).keys.dtype == torch.float32, "converted once, for the fp32 read"
    own = MemoryStack(2, dtype=None)
    kept = own.add(half[0])
    assert own.keys.dtype == kept.values.dtype == torch.bfloat16 and torch.equal(kept.keys, half[0].keys)


def test_the_fused_read_takes_a_kernel_that_never_holds_the_affinity_on_the_cpu():
    # the math kernel (torch's fallback) materialises the affinity; the CPU's flash kernel does not.
    # Only the flash kernel allowed: the read's layout must be one it takes.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    memory, qk, qv = random_memory(3, seed=2, size=(12, 20))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        fused = read_memory_fused(memory, qk, qv)
        # the negative control: one head of 512 values is refused, for that reason
        with pytest.raises(RuntimeError), pytest.warns(UserWarning, match="same last dimension"):
            read_memory_fused(memory, qk, qv, value_heads=1)
    torch.testing.assert_close(fused, read_memory_naive(memory, qk, qv), rtol=1e-5, atol=1e-5)


def test_soft_aggregation():
    ps = torch.tensor([[[0.2]], [[0.6]]])  # unknown, fg
    probs = torch.softmax(soft_aggregate(ps), dim=1)[0, :, 0, 0]
    odds = torch.tensor([0.8 * 0.4 / (1 - 0.32), 0.2 / 0.8, 0.6 / 0.4])
    torch.testing.assert_close(probs, odds / odds.sum())


def test_sharing_decoder_skips_gives_the_same_probabilities(parity_model):
    g = torch.Generator().manual_seed(3)
    frame = torch.randn(1, 3, 64, 80, generator=g)
    probs = torch.softmax(torch.randn(1, 3, 64, 80, generator=g), dim=1)
    shared_model = copy.deepcopy(parity_model)
    shared_model.share_skips = True
    with torch.inference_mode():
        memory = [parity_model.memorize(frame, probs)]
        reference = torch.softmax(parity_model.segment(frame, memory), 1)
        shared = torch.softmax(shared_model.segment(frame, memory), 1)
    assert reference.shape == (1, 3, 64, 80)
    # The same sums in another batch layout: equal up to float rounding, which the loud parity
    # weights amplify to about one 8-bit level at worst.
    diff = (shared - reference).abs()
    assert diff.max() < 2 / 255 and diff.mean() < 1e-4


def test_segment_handles_sizes_that_are_not_multiples_of_16(parity_model):
    frame = torch.randn(1, 3, 37, 51)
    with torch.inference_mode():
        entry = parity_model.memorize(frame, torch.softmax(torch.randn(1, 3, 37, 51), dim=1))
        logits = parity_model.segment(frame, [entry, entry])
    assert logits.shape == (1, 3, 37, 51)
    assert torch.isfinite(logits).all()


class TrainingState:
    """Stands for an object a research checkpoint pickles beside its weights."""


def test_checkpoints_with_arguments_and_numpy_values_load_safely(tmp_path, weights):
    torch.save(
        {"state_dict": weights, "args": argparse.Namespace(lr=1e-5, arch="stm"), "epoch": 150,
         "best_iou": np.float64(0.81), "step": np.int64(12), "history": np.zeros(3)},
        tmp_path / "w.pth",
    )  # fmt: skip
    model = STM()
    load_checkpoint(model, tmp_path / "w.pth")
    assert torch.equal(model.state_dict()["Decoder.pred2.weight"], weights["Decoder.pred2.weight"])


def test_checkpoints_with_other_objects_need_trusting(tmp_path, weights, monkeypatch):
    torch.save({"state_dict": weights, "trainer": TrainingState()}, tmp_path / "w.pth")
    monkeypatch.delenv("TRIMAP_TRUST_CHECKPOINTS", raising=False)
    with pytest.raises(UserError, match=r"objects of types test_model\.TrainingState .* TRIMAP_TRUST_CHECKPOINTS=1"):
        load_checkpoint(STM(), tmp_path / "w.pth")
    monkeypatch.setenv("TRIMAP_TRUST_CHECKPOINTS", "1")
    load_checkpoint(STM(), tmp_path / "w.pth")
