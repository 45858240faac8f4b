"""The parts plan and the confidence weights (docs/method.md, "The parts plan")."""

from __future__ import annotations

import itertools

import pytest

from inference.options import PropagationOptions
from inference.plan import Part, part_confidence, plan_parts
from utils.errors import UserError

pytestmark = pytest.mark.unit


def test_head_between_and_tail_parts_in_order():
    parts = plan_parts([3, 7], 10)
    assert parts == [
        Part((3, 2, 1, 0), (3,)),
        Part((3, 4, 5, 6), (3, 7)),
        Part((7, 6, 5, 4), (3, 7)),
        Part((7, 8, 9), (7,)),
    ]


def test_single_keyframe_in_the_middle_gives_head_and_tail():
    assert plan_parts([2], 5) == [Part((2, 1, 0), (2,)), Part((2, 3, 4), (2,))]


def test_single_keyframe_at_the_start_gives_only_a_tail():
    assert plan_parts([0], 4) == [Part((0, 1, 2, 3), (0,))]


def test_single_keyframe_at_the_end_gives_only_a_head():
    assert plan_parts([3], 4) == [Part((3, 2, 1, 0), (3,))]


def test_keyframes_at_both_ends_give_no_head_or_tail():
    assert plan_parts([0, 4], 5) == [Part((0, 1, 2, 3), (0, 4)), Part((4, 3, 2, 1), (0, 4))]


def test_adjacent_keyframes_give_two_one_frame_parts():
    assert plan_parts([2, 3], 6) == [
        Part((2, 1, 0), (2,)),
        Part((2,), (2, 3)),
        Part((3,), (2, 3)),
        Part((3, 4, 5), (3,)),
    ]


def test_keyframes_are_sorted_and_deduplicated():
    assert plan_parts([7, 3, 7], 10) == plan_parts([3, 7], 10)


def test_out_of_range_keyframes_are_rejected():
    with pytest.raises(ValueError):
        plan_parts([5], 5)
    with pytest.raises(ValueError):
        plan_parts([], 5)


@pytest.mark.parametrize("num_frames", range(1, 8))
def test_every_frame_is_covered_and_parts_start_at_keyframes(num_frames):
    for count in range(1, num_frames + 1):
        for keys in itertools.combinations(range(num_frames), count):
            parts = plan_parts(keys, num_frames)
            covered = {f for part in parts for f in part.frames}
            assert covered | set(keys) == set(range(num_frames))
            for part in parts:
                assert part.start in keys
                assert set(part.fixed) <= set(keys) and part.start in part.fixed
                steps = {b - a for a, b in zip(part.frames, part.frames[1:])}
                assert steps <= {1} or steps <= {-1}
                # a part never runs through another keyframe
                assert not (set(part.frames[1:]) & set(keys))


def test_confidence_is_one_minus_position_over_length():
    part = Part(tuple(range(9)), (0, 9))
    assert part_confidence(part) == [1 - i / 9 for i in range(9)]
    assert part_confidence(Part((4,), (4,))) == [1.0]


def test_mem_every_zero_is_derived_from_max_memory():
    assert PropagationOptions(mem_every=5).keep_every(100) == 5
    assert PropagationOptions(mem_every=0, max_memory=3).keep_every(16) == 6  # ceil(16 / 3)
    assert PropagationOptions(mem_every=0, max_memory=4).keep_every(16) == 4
    assert PropagationOptions(mem_every=0, max_memory=50).keep_every(16) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem_every": 0}, "--mem_every 0 needs --max_memory"),
        ({"mem_every": -1}, "--mem_every -1: must be >= 0"),
        ({"max_memory": 0}, "--max_memory 0: must be >= 1"),
        ({"n_threads": -1}, "--n_threads -1"),
        ({"precision": "fp8"}, "--precision 'fp8'"),
        ({"naive": True, "fast": True}, "takes neither --fast nor --compile"),
    ],
)
def test_propagation_options_are_checked_where_they_are_made(kwargs, message):
    with pytest.raises(UserError, match=message):
        PropagationOptions(**kwargs)
