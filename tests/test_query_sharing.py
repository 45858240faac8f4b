"""The query features a segment's two parts share: the same bits as computing them twice."""

from __future__ import annotations

import pytest
import torch

from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from inference.options import PropagationOptions
from inference.plan import plan_parts, work_units
from inference.propagator import QueryCache
from pipeline.clip import run_clip

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames, keyframes at both ends and one between: two segments, each visited twice."""
    root = tmp_path_factory.mktemp("sharing")
    return make_synthetic_clip(root / "ws", "clip", num_frames=12, size=(40, 56), keyframes=(0, 6, 11), seed=8)


def part_bytes(result) -> dict:
    return {(k, s): result.part_png(k, s).read_bytes() for k in result.part_dirs() for s in result.part_stems(k)}


def propagate(clip, save, weights, **options):
    return run_clip(scan_clip(clip.folder), save, PropagationOptions(**options), CPU, checkpoint=weights, fuse=False)


@pytest.mark.e2e  # whole propagations, several seconds each
@pytest.mark.parametrize("fast", [False, True], ids=["default", "fast"])
def test_sharing_changes_no_bit(tmp_path, clip, parity_weights, fast, caplog):
    off = propagate(clip, tmp_path / "off", parity_weights, fast=fast, share_query_mib=0)
    with caplog.at_level("INFO"):
        on = propagate(clip, tmp_path / "on", parity_weights, fast=fast)
    assert "query features shared: 9 of 18 segment steps" in caplog.text  # 5 + 4 frames between keyframes
    assert part_bytes(on.result) == part_bytes(off.result)


@pytest.mark.e2e  # whole propagations, several seconds each
def test_a_budget_too_small_for_a_frame_recomputes_and_changes_no_bit(tmp_path, clip, parity_weights, caplog):
    off = propagate(clip, tmp_path / "off", parity_weights, share_query_mib=0)
    with caplog.at_level("INFO"):
        tight = propagate(clip, tmp_path / "tight", parity_weights, share_query_mib=1)  # 1 MiB: a few frames
    assert "query features shared:" in caplog.text and "of 18 segment steps" in caplog.text
    assert "shared: 9 of" not in caplog.text, "the budget held back some frames"
    assert part_bytes(tight.result) == part_bytes(off.result)


@pytest.mark.e2e  # whole propagations, several seconds each
def test_a_part_recomputed_alone_finds_nothing_to_share_and_still_matches(tmp_path, clip, parity_weights):
    first = propagate(clip, tmp_path / "out", parity_weights)
    (first.result.part_dir(1) / f"{clip.stems[3]}_tri.png").unlink()  # part 1: backward from 6 to 1
    again = propagate(clip, tmp_path / "out", parity_weights)
    assert again.computed == [1]
    fresh = propagate(clip, tmp_path / "fresh", parity_weights, share_query_mib=0)
    assert part_bytes(again.result) == part_bytes(fresh.result)


@pytest.mark.unit
def test_the_cache_keeps_a_frame_only_while_a_visit_is_to_come():
    parts = plan_parts([0, 4], 6)  # forward 0..3, backward 4..1, tail 4..5
    cache = QueryCache(budget_bytes=10**9)
    cache.expect(parts)
    marker = type("F", (), {"nbytes": 10})()
    cache.take(3)
    cache.offer(3, marker)  # segmented again by the backward part
    cache.take(5)
    cache.offer(5, marker)  # the tail's only visit
    assert cache.held_bytes == 10
    assert cache.take(3) is marker and cache.held_bytes == 0 and cache.hits == 1


@pytest.mark.unit
def test_under_torchrun_a_segment_goes_to_one_rank_when_sharing():
    parts = plan_parts([2, 6, 9], 12)  # head, fwd 2-6, bwd 6-2, fwd 6-9, bwd 9-6, tail
    assert work_units(parts, range(len(parts)), segments_together=True) == [[0], [1, 2], [3, 4], [5]]
    assert work_units(parts, range(len(parts)), segments_together=False) == [[k] for k in range(6)]
    assert work_units(parts, [2, 3, 5], segments_together=True) == [[2], [3], [5]]


@pytest.mark.unit
def test_the_gpu_budget_is_a_quarter_of_the_memory_free_at_start(monkeypatch):
    import inference.options as options_module

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    for free_gib, budget_gib in ((24, 6), (2, 0.5), (130, 32.5)):  # a stubbed free-memory figure, no GPU needed
        monkeypatch.setattr(
            options_module, "device_free_bytes", lambda device, f=free_gib: f * 2**30 if device.type == "cuda" else None
        )
        assert PropagationOptions().share_query_bytes(cuda) == budget_gib * 2**30
    assert PropagationOptions().share_query_bytes(cpu) == 2048 * 2**20, "the CPU keeps its fixed default"
    assert PropagationOptions(share_query_mib=100).share_query_bytes(cuda) == 100 * 2**20, "a given budget wins"
    assert PropagationOptions(naive=True).share_query_bytes(cuda) == 0
