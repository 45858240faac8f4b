"""tgm.py trimap: trimaps from masks and alpha mattes, and the check of hand-drawn trimaps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, mask_to_trimap, snap_trimap
from helpers import run_script
from utils.io import atomic_write_png


def disc(size=101, radius=30.0):
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - size // 2, xx - size // 2) <= radius


@pytest.mark.unit
@pytest.mark.parametrize(("fg_width", "bg_width"), [(5, 5), (3, 8), (0, 4), (6, 0)])
def test_band_reaches_exactly_the_width_on_each_side(fg_width, bg_width):
    mask = disc()
    labels = mask_to_trimap(mask, fg_width, bg_width)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # measured: every unknown pixel lies within its side's width of the other class ...
    assert (inside[mask & (labels == UNKNOWN)] <= fg_width).all()
    assert (outside[~mask & (labels == UNKNOWN)] <= bg_width).all()
    # ... and every pixel within the width is unknown; the rest keeps its class
    assert (labels[mask & (inside <= fg_width)] == UNKNOWN).all()
    assert (labels[~mask & (outside <= bg_width)] == UNKNOWN).all()
    assert (labels[mask & (inside > fg_width)] == FOREGROUND).all()
    assert (labels[~mask & (outside > bg_width)] == BACKGROUND).all()
    # along a row through the centre the band is fg_width + bg_width pixels wide on each side
    row = labels[50]
    assert (row == UNKNOWN).sum() == 2 * (fg_width + bg_width)


@pytest.mark.unit
def test_a_mask_without_an_edge_has_no_band():
    assert (mask_to_trimap(np.ones((5, 5), bool), 3) == FOREGROUND).all()
    assert (mask_to_trimap(np.zeros((5, 5), bool), 3) == BACKGROUND).all()


@pytest.mark.unit
def test_snapping_goes_to_the_nearest_level():
    grey = np.array([[0, 3, 60, 70, 128, 150, 190, 200, 252, 255]], np.uint8)
    assert snap_trimap(grey).tolist() == [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]


def write_masks(folder, kinds):
    mask = disc(61, 18.0)
    images = {"a_mask.png": mask.astype(np.uint8) * 255, "b_mask.png": mask.astype(np.uint8),
              "c.png": np.where(mask, 200, 40).astype(np.uint8)}  # fmt: skip
    folder.mkdir(parents=True)
    for name in kinds:
        atomic_write_png(folder / name, images[name])
    return mask


@pytest.mark.e2e
def test_from_mask_reads_0_255_0_1_and_grey_masks_and_names_outputs_for_the_clip(tmp_path):
    mask = write_masks(tmp_path / "masks", ["a_mask.png", "b_mask.png", "c.png"])
    run = run_script(
        "tgm.py", "trimap", "from-mask", tmp_path / "masks", "--out", tmp_path / "clip", "--band_per_side", "4"
    )
    assert run.returncode == 0, run.stderr
    expected = np.array([0, 128, 255], np.uint8)[mask_to_trimap(mask, 4, 4)]
    for stem in ("a", "b", "c"):
        written = cv2.imread(str(tmp_path / "clip" / f"{stem}_trimap.png"), cv2.IMREAD_UNCHANGED)
        assert written.ndim == 2 and np.array_equal(written, expected), stem
    again = run_script("tgm.py", "trimap", "from-mask", tmp_path / "masks", "--out", tmp_path / "clip")
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.e2e
def test_from_alpha_marks_the_soft_band(tmp_path):
    alpha = np.zeros((9, 9), np.uint16)
    alpha[:, 5:] = 65535
    alpha[:, 4] = 30000
    atomic_write_png(tmp_path / "x_alpha.png", alpha)
    run = run_script("tgm.py", "trimap", "from-alpha", tmp_path / "x_alpha.png", "--out", tmp_path / "x_trimap.png",
                     "--width", "0")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "--width is deprecated: write --band_diameter" in run.stderr  # the old spelling still works
    written = cv2.imread(str(tmp_path / "x_trimap.png"), cv2.IMREAD_UNCHANGED)
    assert written[0].tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255]


@pytest.mark.e2e
def test_check_reports_cleans_and_never_overwrites_unless_asked(tmp_path):
    drawn = np.full((20, 20), 128, np.uint8)
    drawn[:, :6] = 2  # JPEG-ish noise on the background
    drawn[:, 14:] = 251
    drawn[:, 6] = 60  # an anti-aliased edge
    colour = cv2.cvtColor(drawn, cv2.COLOR_GRAY2BGR)
    colour[0, 0] = (0, 0, 9)
    atomic_write_png(tmp_path / "k_trimap.png", colour)
    original = (tmp_path / "k_trimap.png").read_bytes()
    run = run_script("tgm.py", "trimap", "check", tmp_path / "k_trimap.png", "--out", tmp_path / "clean.png")
    assert run.returncode == 0, run.stderr
    assert "colour" in run.stderr and "cleaning moves" in run.stderr
    clean = cv2.imread(str(tmp_path / "clean.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(clean)) == {0, 128, 255}
    assert (clean[:, :7] == 0).all() and (clean[:, 7:14] == 128).all() and (clean[:, 14:] == 255).all()
    assert (tmp_path / "k_trimap.png").read_bytes() == original
    same = run_script("tgm.py", "trimap", "check", tmp_path / "k_trimap.png", "--out", tmp_path / "k_trimap.png")
    assert same.returncode == 2 and "--in_place" in same.stderr
    in_place = run_script("tgm.py", "trimap", "check", tmp_path / "k_trimap.png", "--in_place")
    assert in_place.returncode == 0, in_place.stderr
    assert (tmp_path / "k_trimap.orig.png").read_bytes() == original
    assert np.array_equal(cv2.imread(str(tmp_path / "k_trimap.png"), cv2.IMREAD_UNCHANGED), clean)


@pytest.mark.e2e
def test_check_warns_about_empty_classes(tmp_path):
    atomic_write_png(tmp_path / "k_trimap.png", np.full((8, 8), 255, np.uint8))
    run = run_script("tgm.py", "trimap", "check", tmp_path / "k_trimap.png")
    assert run.returncode == 0
    assert "warning: no background pixels" in run.stderr and "warning: no unknown pixels" in run.stderr
