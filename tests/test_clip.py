"""Reading clip folders: stem order, keyframes from GT_IDX or trimap files, pairing by stem."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.clip import check_sizes, scan_clip
from utils.errors import UserError
from utils.images import read_rgb
from utils.io import atomic_write_png

pytestmark = pytest.mark.unit


def write(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_png(folder / name, image)


def frame(h=8, w=10, value=100):
    return np.full((h, w, 3), value, np.uint8)


def trimap(h=8, w=10):
    t = np.zeros((h, w), np.uint8)
    t[2:6, 3:7] = 128
    t[3:5, 4:6] = 255
    return t


def make(folder, stems, trimaps):
    for s in stems:
        write(folder, f"{s}_rgb.png", frame())
    for s in trimaps:
        write(folder, f"{s}_trimap.png", trimap())


def test_frames_are_sorted_by_stem_and_keyframes_come_from_trimap_files(tmp_path):
    make(tmp_path, ["b", "a", "c", "d"], ["c", "a"])
    clip = scan_clip(tmp_path)
    assert clip.stems == ["a", "b", "c", "d"]
    assert clip.keyframe_indices == [0, 2]
    assert clip.trimap_path(2).name == "c_trimap.png"


def test_gt_idx_picks_a_subset_and_pairs_by_stem_not_position(tmp_path):
    # trimaps exist for frames 1 and 3 only: GT_IDX [3] must pair frame 3 with 003_trimap
    make(tmp_path, ["000", "001", "002", "003"], ["001", "003"])
    clip = scan_clip(tmp_path, [3])
    assert clip.keyframe_indices == [3]
    assert clip.trimap_path(3).name == "003_trimap.png"


def test_gt_idx_is_sorted(tmp_path):
    make(tmp_path, ["0", "1", "2"], ["0", "2"])
    assert scan_clip(tmp_path, [2, 0]).keyframe_indices == [0, 2]


@pytest.mark.parametrize(
    ("gt_idx", "message"),
    [([7], "GT_IDX names frame 7"), ([1], "1_trimap.png does not exist"), ([0, 0], "more than once")],
)
def test_bad_gt_idx_is_a_user_error(tmp_path, gt_idx, message):
    make(tmp_path, ["0", "1", "2"], ["0", "2"])
    with pytest.raises(UserError, match=message):
        scan_clip(tmp_path, gt_idx)


def test_a_trimap_without_its_frame_is_named(tmp_path):
    make(tmp_path, ["0", "1"], ["0", "5"])
    with pytest.raises(UserError, match=r"5_trimap\.png has no matching frame"):
        scan_clip(tmp_path)


def test_no_keyframes_is_a_user_error(tmp_path):
    make(tmp_path, ["0", "1"], [])
    with pytest.raises(UserError, match="no keyframes"):
        scan_clip(tmp_path)


def test_no_frames_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no frames"):
        scan_clip(tmp_path)


def test_frames_are_read_in_rgb_order(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    write(tmp_path, "x_rgb.png", bgr)
    rgb = read_rgb(tmp_path / "x_rgb.png")
    assert rgb[0, 0].tolist() == [200, 0, 10]


def test_sizes_must_agree(tmp_path):
    make(tmp_path, ["0", "1"], ["0"])
    assert check_sizes(scan_clip(tmp_path)) == (8, 10)
    write(tmp_path, "1_rgb.png", frame(9, 10))
    with pytest.raises(UserError, match=r"1_rgb\.png is 10x9"):
        check_sizes(scan_clip(tmp_path))


def test_grey_rgba_and_16_bit_frames_are_converted_to_8_bit_rgb(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 120, 250
    grey = np.array([[0, 77, 255], [1, 128, 254]], np.uint8)
    write(tmp_path, "grey_rgb.png", grey)
    assert (read_rgb(tmp_path / "grey_rgb.png") == grey[..., None]).all()  # R = G = B = grey
    rgba = np.dstack([bgr, np.full((2, 3), 7, np.uint8)])  # alpha is dropped, not multiplied in
    write(tmp_path, "rgba_rgb.png", rgba)
    assert (read_rgb(tmp_path / "rgba_rgb.png") == [250, 120, 10]).all()
    deep = bgr.astype(np.uint16) * 257  # 8-bit values scaled to 16 bits come back exactly
    deep[0, 0] = (1000, 65535, 128)  # others are rounded: 1000 / 257 = 3.9 -> 4, 128 / 257 -> 0
    write(tmp_path, "deep_rgb.png", deep)
    frame = read_rgb(tmp_path / "deep_rgb.png")
    assert frame.dtype == np.uint8
    assert frame[0, 0].tolist() == [0, 255, 4] and (frame[1] == [250, 120, 10]).all()
