"""Trimap decode/encode, one-hot, dilation, probability PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.trimap import (
    decode_trimap,
    dilate_unknown,
    encode_labels,
    labels_to_onehot,
    probs_to_png,
)

pytestmark = pytest.mark.unit


def test_every_grey_value_decodes_to_one_class():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    labels = decode_trimap(grey)
    assert labels.flat[0] == 0
    assert labels.flat[255] == 2
    assert (labels.flat[1:255] == 1).all()


def test_encode_writes_0_128_255():
    assert encode_labels(np.array([[0, 1, 2]], dtype=np.uint8)).tolist() == [[0, 128, 255]]


def test_encode_then_decode_round_trips():
    labels = np.random.default_rng(0).integers(0, 3, (7, 9)).astype(np.uint8)
    assert np.array_equal(decode_trimap(encode_labels(labels)), labels)


def test_onehot_channels_are_bg_unknown_fg():
    labels = np.array([[0, 1, 2]], dtype=np.uint8)
    onehot = labels_to_onehot(labels)
    assert onehot.shape == (3, 1, 3) and onehot.dtype == np.float32
    assert onehot[:, 0, 0].tolist() == [1, 0, 0]
    assert onehot[:, 0, 1].tolist() == [0, 1, 0]
    assert onehot[:, 0, 2].tolist() == [0, 0, 1]


def test_dilation_widens_the_unknown_band_elliptically():
    labels = np.zeros((21, 21), dtype=np.uint8)
    labels[:, 11:] = 2
    labels[:, 10] = 1
    wide = decode_trimap(encode_labels(labels), dilation=5)
    assert (wide[:, 8:13] == 1).all()  # 5 x 5 ellipse: two pixels each side
    assert (wide[:, :8] == 0).all() and (wide[:, 13:] == 2).all()
    assert np.array_equal(dilate_unknown(labels, 1), labels)


def test_dilation_zero_changes_nothing():
    labels = np.random.default_rng(1).integers(0, 3, (9, 9)).astype(np.uint8)
    assert np.array_equal(decode_trimap(encode_labels(labels), 0), labels)


def test_probability_png_floors_p_times_255():
    probs = np.array([[[1.0, 0.5, 0.0], [0.999, 0.0039, 0.9961]]], dtype=np.float32)
    png = probs_to_png(probs)
    assert png.dtype == np.uint8
    assert png.tolist() == [[[255, 127, 0], [254, 0, 254]]]
