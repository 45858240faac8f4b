"""Keyframe trimaps from a box and strokes (GrabCut), of people (the optional person segmenter),
and the app's pictures for looking at (thumbnails, display copies)."""

from __future__ import annotations

import importlib.util
import io
import os

import cv2
import numpy as np
import pytest

from dataset.segment import Box, box_trimap, grabcut_mask, person_model_path, read_strokes
from dataset.synthetic import make_synthetic_clip
from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN
from evaluation.folders import read_labels
from evaluation.metrics import confusion, iou_from_confusion
from helpers import app_workspace, run_main
from utils.errors import UserError
from utils.images import encode_png, read_alpha, read_rgb
from utils.io import atomic_write_png

HAS_PERSON_EXTRA = importlib.util.find_spec("mediapipe") is not None and importlib.util.find_spec("ai_edge_litert")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A generated 240x400 frame, its true trimap (12-px band) and mask (alpha > 0.5)."""
    root = tmp_path_factory.mktemp("cutout")
    clip = make_synthetic_clip(root / "ws", "clip", 2, (240, 400), keyframes=(0,), seed=11, unknown_width=12)
    rgb = read_rgb(clip.folder / "00000_rgb.png")
    truth = read_labels(clip.gt_folder / "00000_trimap.png")
    mask = read_alpha(clip.gt_folder / "00000_alpha.png") > 0.5
    return clip, rgb, truth, mask


def bounding_box(mask: np.ndarray, pad: int = 5) -> Box:
    ys, xs = np.nonzero(mask)
    return Box.clipped(xs.min() - pad, ys.min() - pad, xs.max() + 1 + pad, ys.max() + 1 + pad, *mask.shape[::-1])


@pytest.mark.unit
def test_a_box_alone_cuts_the_generated_subject_out(sample):
    _, rgb, truth, mask = sample
    labels = box_trimap(rgb, bounding_box(mask), band_per_side=12)  # the band of the true trimap's soft edge
    assert set(np.unique(labels)) == {BACKGROUND, UNKNOWN, FOREGROUND}
    assert np.array_equal(labels, box_trimap(rgb, bounding_box(mask), band_per_side=12))  # repeatable
    miou = float(iou_from_confusion(confusion(labels, truth)).mean())
    assert miou >= 0.75, miou  # 0.80 on this clip; bench/bench_box.py gives the mean over clips (docs/keyframes.md)
    rectangle = np.zeros_like(labels)
    box = bounding_box(mask)
    rectangle[box.y0 : box.y1, box.x0 : box.x1] = UNKNOWN
    assert miou > float(iou_from_confusion(confusion(rectangle, truth)).mean()) + 0.2  # far above the baseline


@pytest.mark.unit
def test_the_box_and_strokes_are_hard_constraints(sample):
    _, rgb, _, mask = sample
    box = bounding_box(mask)
    fg = np.zeros(mask.shape, bool)
    fg[box.y0 + 2 : box.y0 + 6, box.x0 + 2 : box.x0 + 30] = True  # "this corner is the subject"
    bg = np.zeros(mask.shape, bool)
    ys, xs = np.nonzero(mask)
    bg[ys[len(ys) // 2] - 2 : ys[len(ys) // 2] + 2, xs[len(xs) // 2] - 2 : xs[len(xs) // 2] + 2] = True
    cut = grabcut_mask(rgb, box, fg, bg)
    assert cut[fg].all() and not cut[bg].any()
    outside = np.ones(mask.shape, bool)
    outside[box.y0 : box.y1, box.x0 : box.x1] = False
    assert not cut[outside].any()
    labels = box_trimap(rgb, box, 6, fg, bg)
    assert (labels[fg] == FOREGROUND).all() and (labels[bg] == BACKGROUND).all()  # sure, even inside the band


@pytest.mark.unit
def test_foreground_strokes_alone_are_enough_and_nothing_is_refused(sample):
    _, rgb, _, mask = sample
    ys, xs = np.nonzero(cv2.erode(mask.astype(np.uint8), np.ones((15, 15))))
    fg = np.zeros(mask.shape, bool)
    fg[ys[::50], xs[::50]] = True
    cut = grabcut_mask(rgb, None, fg)
    assert cut[fg].all() and (cut & mask).sum() > 0.5 * mask.sum()
    with pytest.raises(UserError, match="nothing says where the foreground is"):
        grabcut_mask(rgb, None, None, fg)
    with pytest.raises(UserError, match="holds less than 2x2 pixels"):
        Box.parse("5,5,5,90", 400, 240)
    with pytest.raises(UserError, match="give x0,y0,x1,y1 in pixels"):
        Box.parse("1,2,3", 400, 240)
    assert Box.parse("-10,20,500,60.4", 400, 240) == Box(0, 20, 400, 60)


@pytest.mark.cli
def test_from_box_writes_a_trimap_and_takes_strokes_in_either_spelling(sample, tmp_path):
    clip, _, _, mask = sample
    frame = clip.folder / "00000_rgb.png"
    box = bounding_box(mask)
    box_text = f"{box.x0},{box.y0},{box.x1},{box.y1}"
    out = tmp_path / "t" / "00000_trimap.png"
    run = run_main("tgm.py", "trimap", "from-box", frame, "--box", box_text, "--out", out, "--width", 6)
    assert run.returncode == 0, run.stderr
    assert "deprecated" in run.stderr  # --width: the old spelling of --band_per_side
    written = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(written)) == {0, 128, 255}
    strokes = np.zeros(mask.shape, np.uint8)
    strokes[box.y0 + 2 : box.y0 + 6, box.x0 + 2 : box.x0 + 30] = 255
    atomic_write_png(tmp_path / "fg.png", strokes)
    again = run_main("tgm.py", "trimap", "from-box", frame, "--box", box_text, "--fg-strokes", tmp_path / "fg.png",
                     "--out", out, "--overwrite")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)[strokes > 0] == 255).all()
    refused = run_main("tgm.py", "trimap", "from-box", frame, "--box", box_text, "--out", out)
    assert refused.returncode == 2 and "exists; pass --overwrite" in refused.stderr
    no_box = run_main("tgm.py", "trimap", "from-box", frame, "--out", tmp_path / "x.png")
    assert no_box.returncode == 2 and "needs --box x0,y0,x1,y1" in no_box.stderr
    atomic_write_png(tmp_path / "small.png", strokes[:10])
    wrong = run_main("tgm.py", "trimap", "from-box", frame, "--box", box_text, "--bg_strokes", tmp_path / "small.png",
                     "--out", tmp_path / "y.png")  # fmt: skip
    assert wrong.returncode == 2 and "small.png is 400x10 but the frame is 400x240" in wrong.stderr
    with pytest.raises(UserError, match="is not an image OpenCV can read"):
        read_strokes(tmp_path / "missing.png", 240, 400, "--fg_strokes")


@pytest.mark.cli
def test_from_person_without_the_extra_says_how_to_install_it(sample, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    clip = sample[0]
    run = run_main("tgm.py", "trimap", "from-person", clip.folder, "--out", tmp_path / "people")
    assert run.returncode == 2, run.stderr
    assert "pip install --no-deps mediapipe==0.10.14 && pip install ai-edge-litert" in run.stderr
    assert not (tmp_path / "people").exists()


@pytest.mark.cli
@pytest.mark.skipif(not HAS_PERSON_EXTRA, reason="the optional person extra (mediapipe wheel + ai-edge-litert)")
def test_from_person_finds_a_person_shaped_figure(tmp_path):
    """A drawn figure (head, body, arms) in skin and cloth colours on a plain wall: the segmenter
    sees a person there and nothing in an empty frame of the same wall."""
    wall = np.full((288, 512, 3), (200, 205, 210), np.uint8)
    person = wall.copy()
    cv2.circle(person, (256, 70), 34, (180, 140, 120), -1)  # head
    cv2.ellipse(person, (256, 200), (70, 100), 0, 0, 360, (40, 60, 130), -1)  # torso
    for folder, image in (("empty", wall), ("person", person)):
        (tmp_path / folder).mkdir()
        atomic_write_png(tmp_path / folder / "00000_rgb.png", image[..., ::-1].copy())
    assert person_model_path().is_file()
    for folder in ("person", "empty"):
        run = run_main("tgm.py", "trimap", "from-person", tmp_path / folder, "--out", tmp_path / f"{folder}_trimaps",
                       "--band_per_side", 4)  # fmt: skip
        assert run.returncode == 0, run.stderr
    found = read_labels(tmp_path / "person_trimaps" / "00000_trimap.png")
    assert found[200, 256] == FOREGROUND and found[10, 10] == BACKGROUND and (found == UNKNOWN).any()
    assert (read_labels(tmp_path / "empty_trimaps" / "00000_trimap.png") == BACKGROUND).all()


# --- the app --------------------------------------------------------------------------------------


@pytest.fixture
def view_and_client(tmp_path, parity_weights):
    from webapp.server import AppConfig, create_app
    from webapp.workspace import WorkspaceView

    workspace = app_workspace(tmp_path)
    app = create_app(AppConfig(workspace, tmp_path / "results", "tok-2", load=parity_weights))
    client = app.test_client()

    def call(method: str, path: str, **kwargs):
        return client.open(path, method=method, base_url="http://127.0.0.1:8765", headers={"X-Token": "tok-2"},
                           **kwargs)  # fmt: skip

    return WorkspaceView(workspace, tmp_path / "results"), call, workspace, tmp_path / "results"


@pytest.mark.unit
def test_the_app_cuts_out_from_a_box_and_strokes(view_and_client):
    call = view_and_client[1]
    made = call("POST", "/api/clips/clip/from-box/00001", data={"box": "[10, 5, 46, 35]", "band": "3"})
    assert made.status_code == 200 and made.mimetype == "image/png", made.get_json()
    trimap = cv2.imdecode(np.frombuffer(made.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert trimap.shape == (40, 56) and set(np.unique(trimap)) <= {0, 128, 255}
    assert (trimap[:, :8] == 0).all()  # outside the box: background
    strokes = np.zeros((40, 56), np.uint8)
    strokes[18:22, 24:30] = 255
    made = call("POST", "/api/clips/clip/from-box/00001", content_type="multipart/form-data", data={
        "box": "[10, 5, 46, 35]", "band": "3", "bg_strokes": (io.BytesIO(encode_png(strokes)), "bg.png"),
    })  # fmt: skip
    assert made.status_code == 200
    assert (cv2.imdecode(np.frombuffer(made.data, np.uint8), cv2.IMREAD_GRAYSCALE)[strokes > 0] == 0).all()
    refusals = (
        ({"box": "[1, 2]"}, "box must be [x0, y0, x1, y1]"), ({"box": "nope"}, "box must be JSON"),
        ({}, "draw a box around the subject"), ({"box": "[1,1,9,9]", "band": "x"}, "band must be"),
    )  # fmt: skip
    for bad, message in refusals:
        refused = call("POST", "/api/clips/clip/from-box/00001", data=bad)
        assert refused.status_code == 400 and message in refused.get_data(as_text=True), bad
    assert call("POST", "/api/clips/clip/from-box/99999", data={"box": "[1,1,9,9]"}).status_code == 404


@pytest.mark.unit
def test_thumbnails_and_display_copies_are_made_once_and_remade_when_the_frame_changes(view_and_client):
    _, call, workspace, results = view_and_client
    thumb = call("GET", "/api/clips/clip/thumb/00002")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR).shape[0] == 40  # never enlarged
    display = call("GET", "/api/clips/clip/display/00002?quality=60")
    assert display.status_code == 200 and display.mimetype == "image/jpeg"
    cached = results / ".app" / "display" / "clip" / "00002.q60.jpg"
    first = cached.stat().st_mtime_ns
    assert call("GET", "/api/clips/clip/display/00002?quality=60").data == display.data
    assert cached.stat().st_mtime_ns == first  # served from the cache
    frame = workspace / "clip" / "00002_rgb.png"
    os.utime(frame, ns=(first + 10**9, first + 10**9))  # the frame changed after the copy was made
    call("GET", "/api/clips/clip/display/00002?quality=60")
    assert cached.stat().st_mtime_ns > first
    assert call("GET", "/api/clips/clip/display/00002?quality=5").status_code == 400
    png = call("GET", "/api/clips/clip/frame/00002").data
    assert len(display.data) < len(png)  # what playback saves (a 56x40 frame: a little; 1080p: about 10x)


@pytest.mark.unit
def test_the_new_routes_need_the_token(view_and_client, tmp_path):
    from webapp.server import AppConfig, create_app

    app = create_app(AppConfig(view_and_client[2], tmp_path / "other_results", "tok-2"))
    client = app.test_client()
    routes = (
        ("GET", "/api/clips/clip/thumb/00000"), ("GET", "/api/clips/clip/display/00000"),
        ("POST", "/api/clips/clip/from-box/00000"), ("POST", "/api/clips/clip/from-person/00000"),
    )  # fmt: skip
    for method, path in routes:
        assert client.open(path, method=method, base_url="http://127.0.0.1:8765").status_code in (401, 403), path
