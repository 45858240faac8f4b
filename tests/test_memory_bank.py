"""The memory bank: read order, keeping every keep_every-th frame, the max_memory bound."""

from __future__ import annotations

import pytest

from inference.memory_bank import MemoryBank, Slot

pytestmark = pytest.mark.unit


def simulate(part_length: int, fixed: list[int], keep_every: int, max_memory: int | None) -> list[list[int]]:
    """The frames each read sees, for local frames 1..part_length-1 (frame ids = local index)."""
    bank = MemoryBank([Slot(f"k{k}", None) for k in fixed], keep_every, max_memory)
    reads = []
    for i in range(1, part_length):
        if i >= 2:
            bank.set_temporary(Slot(i - 1, None))
        reads.append(bank.frames())
        bank.after_segment(i)
    return reads


def test_keep_every_1_max_memory_3_keeps_a_sliding_window():
    reads = simulate(7, [0, 9], keep_every=1, max_memory=3)
    assert reads == [
        ["k0", "k9"],
        ["k0", "k9", 1],
        ["k0", "k9", 1, 2],
        ["k0", "k9", 1, 2, 3],
        ["k0", "k9", 2, 3, 4],
        ["k0", "k9", 3, 4, 5],
    ]


def test_keep_every_5_keeps_frames_5_10_and_the_previous_one():
    reads = simulate(13, [0], keep_every=5, max_memory=None)
    assert reads[0] == ["k0"]
    assert reads[4] == ["k0", 4]  # frame 5 reads the temporary frame 4 only
    assert reads[5] == ["k0", 5]  # frame 6: 5 was kept (and is not also temporary)
    assert reads[6] == ["k0", 5, 6]
    assert reads[10] == ["k0", 5, 10]
    assert reads[11] == ["k0", 5, 10, 11]


def test_reads_never_see_more_than_max_memory_non_fixed_entries():
    for keep_every in range(1, 4):
        for max_memory in range(1, 5):
            for read in simulate(30, [0, 29], keep_every, max_memory):
                assert read[:2] == ["k0", "k29"], "keyframes are never dropped and come first"
                assert len(read) - 2 <= max_memory


def test_max_memory_1_reads_only_the_previous_frame():
    reads = simulate(6, [0], keep_every=1, max_memory=1)
    assert reads == [["k0"], ["k0", 1], ["k0", 2], ["k0", 3], ["k0", 4]]


def test_eviction_drops_the_oldest_kept_entry_first():
    reads = simulate(20, [0], keep_every=2, max_memory=3)
    kept_order = [r[1:-1] for r in reads if len(r) > 2]
    for earlier, later in zip(kept_order, kept_order[1:]):
        # the window only ever moves forward
        assert sorted(earlier) == earlier and sorted(later) == later
    assert reads[-1] == ["k0", 14, 16, 18]  # even frames are kept (i - 1 = 2, 4, ...)


def test_unbounded_memory_grows_with_the_part():
    reads = simulate(12, [0], keep_every=1, max_memory=None)
    assert reads[-1] == ["k0", *range(1, 11)]
