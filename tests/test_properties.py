"""Property-based tests (hypothesis) of trimap decoding, the parts plan and the memory bank."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dataset.trimap import decode_trimap, encode_labels
from inference.memory_bank import MemoryBank, Slot
from inference.plan import part_confidence, plan_parts

grey_images = arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)))


pytestmark = pytest.mark.unit


@given(grey_images)
def test_decoding_maps_0_to_background_255_to_foreground_and_the_rest_to_unknown(grey):
    labels = decode_trimap(grey)
    assert np.array_equal(labels == 0, grey == 0)
    assert np.array_equal(labels == 2, grey == 255)
    assert np.array_equal(labels == 1, (grey > 0) & (grey < 255))


@given(grey_images, st.integers(0, 7))
def test_decoding_is_stable_under_encoding_and_dilation_only_grows_unknown(grey, dilation):
    labels = decode_trimap(grey, dilation)
    assert np.array_equal(decode_trimap(encode_labels(labels)), labels)
    plain = decode_trimap(grey)
    assert np.all((labels == plain) | (labels == 1)), "dilation only turns pixels unknown"
    assert np.all(labels[plain == 1] == 1)


@st.composite
def clips(draw):
    frames = draw(st.integers(1, 40))
    keys = draw(st.lists(st.integers(0, frames - 1), min_size=1, max_size=6, unique=True))
    return frames, keys


@given(clips())
def test_parts_cover_every_frame_in_runs_from_keyframes(clip):
    frames, keys = clip
    parts = plan_parts(keys, frames)
    covered = {f for part in parts for f in part.frames} | set(keys)
    assert covered == set(range(frames))
    for part in parts:
        assert part.start in keys and part.start in part.fixed
        steps = {b - a for a, b in zip(part.frames, part.frames[1:])}
        assert steps in (set(), {1}, {-1})
        assert not set(part.frames[1:]) & set(keys)
        weights = part_confidence(part)
        assert weights[0] == 1.0 and all(0 < w <= 1 for w in weights)
        assert weights == sorted(weights, reverse=True)
    # every frame between two keyframes is reached from both sides
    ordered = sorted(keys)
    for a, b in zip(ordered, ordered[1:]):
        for f in range(a + 1, b):
            assert sum(f in part.frames for part in parts) == 2


@settings(max_examples=200)
@given(st.integers(2, 60), st.integers(1, 7), st.one_of(st.none(), st.integers(1, 6)), st.integers(1, 2))
def test_bank_bounds_order_and_contents(part_length, keep_every, max_memory, fixed_count):
    fixed = [f"key{k}" for k in range(fixed_count)]
    bank = MemoryBank([Slot(k, None) for k in fixed], keep_every, max_memory)
    for i in range(1, part_length):
        if i >= 2:
            bank.set_temporary(Slot(i - 1, None))
        read = bank.frames()
        assert read[:fixed_count] == fixed, "keyframes first, never dropped"
        others = read[fixed_count:]
        if max_memory is not None:
            assert len(others) <= max_memory
        assert others == sorted(others), "kept oldest first, temporary last"
        assert len(set(others)) == len(others)
        if i >= 2:
            assert others[-1] == i - 1, "the previous frame is always read"
        kept = others[:-1] if i >= 2 else others
        assert all(f % keep_every == 0 for f in kept), "only every keep_every-th frame is kept"
        if max_memory is None:
            assert kept == list(range(keep_every, i - 1, keep_every))
        bank.after_segment(i)
