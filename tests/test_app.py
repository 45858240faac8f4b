"""The web app's HTTP API with Flask's test client: tokens, path traversal, uploads, saving a
trimap, starting and cancelling jobs."""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile

import av
import cv2
import numpy as np
import pytest

from helpers import app_workspace
from utils.exr import read_exr
from utils.io import encode_png
from webapp.server import AppConfig, create_app

TOKEN = "test-token-123"


@pytest.fixture
def workspace(tmp_path):
    return app_workspace(tmp_path)


@pytest.fixture
def app(tmp_path, workspace, parity_weights):
    config = AppConfig(workspace, tmp_path / "results", TOKEN, load=parity_weights)
    application = create_app(config)
    yield application
    runner = application.extensions["trimap_runner"]
    runner.cancel()
    wait_for_job(stranger(application), timeout=30, allow_running=True)


HOST = "127.0.0.1:8765"  # AppConfig's default port


class Client:
    """Flask's test client at a given Host, with headers sent on every request."""

    def __init__(self, app, host: str = HOST, headers: dict | None = None, cookie: str | None = None) -> None:
        self.client, self.host, self.headers = app.test_client(), host, headers or {}
        if cookie is not None:
            self.client.set_cookie(app.extensions["trimap_guard"].cookie, cookie, domain=host.split(":")[0])

    def open(self, method: str, path: str, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, base_url=f"http://{self.host}", headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self.open("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.open("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.open("PUT", path, **kwargs)


def as_page(app):
    """A client that behaves like the page after the token matched: the session cookie and the XSRF header."""
    guard = app.extensions["trimap_guard"]
    return Client(app, headers={"X-XSRF-Token": guard.xsrf}, cookie=guard.session)


def stranger(app, host: str = HOST):
    """A client with nothing: no cookie, no header."""
    return Client(app, host)


@pytest.fixture
def client(app):
    return as_page(app)


def wait_for_job(client, timeout: float = 120, allow_running: bool = False) -> dict | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get("/api/job", headers={"X-Token": TOKEN}).get_json()["job"]
        if job is None or job["state"] != "running":
            return job
        time.sleep(0.3)
    if allow_running:
        return None
    raise AssertionError("the job did not finish in time")


@pytest.mark.unit
def test_every_request_needs_the_token(app):
    anonymous = stranger(app)
    for path in ("/", "/static/app.js", "/api/clips", "/api/clips/clip/frame/00000", "/api/job"):
        response = anonymous.get(path)
        assert response.status_code == 403 and "token" in response.get_json()["error"], path
    assert anonymous.get("/api/clips", headers={"X-Token": "wrong"}).status_code == 403
    assert anonymous.get("/api/clips", headers={"X-Token": TOKEN}).status_code == 200
    first = anonymous.get(f"/?token={TOKEN}")  # the printed address: the page with its key, and the cookie
    assert first.status_code == 200 and "trimap_session_8765=" in first.headers["Set-Cookie"]
    assert "HttpOnly" in first.headers["Set-Cookie"] and "SameSite=Strict" in first.headers["Set-Cookie"]
    assert anonymous.get("/").status_code == 200  # a reload: the cookie fetches the page (its tab keeps the key)


@pytest.mark.unit
def test_the_page_and_its_assets_come_from_the_app(client):
    page = client.get("/").get_data(as_text=True)
    assert "/static/app.js" in page and "/static/app.css" in page
    assert "http://" not in page and "https://" not in page, "no CDN: every asset ships with the project"
    for name in ("app.js", "app.css"):
        body = client.get(f"/static/{name}").get_data(as_text=True)
        assert "https://" not in body and "http://" not in body


@pytest.mark.unit
@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py", "/static/%2e%2e%2fserver.py", "/api/clips/..%2f..%2fetc/frame/passwd",
        "/api/clips/clip/frame/..%2f..%2f..%2fetc%2fpasswd", "/api/clips/clip/keyframe/%2e%2e", "/api/clips/..",
        "/api/clips/clip/matte/00000?kind=../../x", "/api/clips/clip/frame/00000_rgb.png",
    ],
)  # fmt: skip
def test_path_traversal_is_refused(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert response.get_json() is not None and "error" in response.get_json()
    assert b"root:" not in response.get_data()


@pytest.mark.unit
def test_clips_frames_and_keyframes(client):
    clips = client.get("/api/clips").get_json()["clips"]
    assert clips == [{"name": "clip", "frames": 5, "keyframes": 2, "propagated": False}]
    detail = client.get("/api/clips/clip").get_json()
    assert detail["stems"] == ["00000", "00001", "00002", "00003", "00004"] and detail["keyframes"] == [
        "00000",
        "00004",
    ]
    assert (detail["height"], detail["width"]) == (40, 56)
    frame = cv2.imdecode(np.frombuffer(client.get("/api/clips/clip/frame/00002").data, np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (40, 56, 3)
    assert client.get("/api/clips/clip/keyframe/00002").status_code == 404
    assert client.get("/api/clips/clip/result/00002").status_code == 404


@pytest.mark.unit
def test_saving_a_trimap_snaps_it_and_keeps_a_backup_once(client, workspace):
    original = (workspace / "clip" / "00000_trimap.png").read_bytes()
    drawn = np.full((40, 56), 128, np.uint8)
    drawn[:10] = 3  # near background
    drawn[30:] = 250  # near foreground
    for _ in range(2):
        response = client.put("/api/clips/clip/keyframe/00000", data=encode_png(drawn), content_type="image/png")
        assert response.status_code == 200, response.get_json()
    saved = cv2.imread(str(workspace / "clip" / "00000_trimap.png"), cv2.IMREAD_UNCHANGED)
    assert (saved[:10] == 0).all() and (saved[10:30] == 128).all() and (saved[30:] == 255).all()
    assert (workspace / "clip" / "00000_trimap.orig.png").read_bytes() == original, "the first version is kept"
    new = client.put("/api/clips/clip/keyframe/00002", data=encode_png(drawn), content_type="image/png")
    assert new.status_code == 200 and new.get_json()["backup"] is None
    assert client.get("/api/clips/clip").get_json()["keyframes"] == ["00000", "00002", "00004"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"#!/bin/sh\nrm -rf /\n", 400, "not an image"),
        (b"", 400, "no trimap image"),
        (encode_png(np.zeros((10, 10), np.uint8)), 400, "is 10x10 but frame 00001 is 56x40"),
        (b"\x89PNG" + b"0" * (33 * 2**20), 413, "too large: at most 32 MiB"),
    ],
    ids=["script", "empty", "wrong-size", "too-large"],
)
def test_bad_uploads_get_a_message_and_change_nothing(client, workspace, body, status, message):
    response = client.put("/api/clips/clip/keyframe/00001", data=body, content_type="image/png")
    assert response.status_code == status
    assert message.lower() in response.get_json()["error"].lower()
    assert not (workspace / "clip" / "00001_trimap.png").exists()


@pytest.mark.unit
def test_fill_from_a_mask(client):
    mask = np.zeros((40, 56), np.uint8)
    mask[10:30, 15:40] = 255
    response = client.post("/api/clips/clip/from-mask/00001", data={"mask": (io.BytesIO(encode_png(mask)), "m.png"),
                           "width": "3"}, content_type="multipart/form-data")  # fmt: skip
    assert response.status_code == 200 and response.mimetype == "image/png"
    trimap = cv2.imdecode(np.frombuffer(response.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert trimap[20, 27] == 255 and trimap[0, 0] == 0 and trimap[20, 15] == 128 and trimap[20, 13] == 128
    bad = client.post("/api/clips/clip/from-mask/00001", data={"mask": (io.BytesIO(encode_png(mask)), "m.png"),
                      "width": "many"}, content_type="multipart/form-data")  # fmt: skip
    assert bad.status_code == 400


@pytest.mark.e2e
def test_a_job_propagates_fuses_and_its_results_are_served(client):
    assert client.post("/api/job", json={"clip": "clip", "kind": "matte"}).status_code == 409  # nothing fused yet
    started = client.post("/api/job", json={"clip": "clip", "kind": "propagate"})
    assert started.status_code == 202, started.get_json()
    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate"}).status_code == 409, "one at a time"
    job = wait_for_job(client)
    assert job["state"] == "done", job
    detail = client.get("/api/clips/clip").get_json()
    assert detail["result"]["fused"] == detail["stems"] and detail["result"]["uncertainty"]["suggested"]
    trimap = client.get("/api/clips/clip/result/00002")
    assert trimap.status_code == 200 and trimap.mimetype == "image/png"
    assert client.get("/api/clips/clip/uncertainty.png").status_code == 200


@pytest.mark.e2e
def test_the_matte_job_ends_with_a_foreground_video_served_while_its_trimaps_are_current(client, tmp_path):
    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate"}).status_code == 202
    assert wait_for_job(client)["state"] == "done"
    assert client.get("/api/clips/clip/foreground.mov").status_code == 404 and not detail_video(client)
    assert client.post("/api/job", json={"clip": "clip", "kind": "matte"}).status_code == 202
    job = wait_for_job(client)
    assert job["state"] == "done" and job["stages"] == 2, job
    assert detail_video(client)
    response = client.get("/api/clips/clip/foreground.mov")
    assert response.status_code == 200 and "clip_foreground.mov" in response.headers["Content-Disposition"]
    saved = tmp_path / "download.mov"
    saved.write_bytes(response.data)
    with av.open(str(saved)) as container:
        stream = container.streams.video[0]
        assert "yuva444" in stream.codec_context.pix_fmt, "the alpha travels in the video"
        assert sum(1 for _ in container.decode(stream)) == len(client.get("/api/clips/clip").get_json()["stems"])
    # a rerun after a new keyframe changes the fused trimaps: the video describes the old ones
    # until the next matte job
    drawn = np.full((40, 56), 128, np.uint8)
    drawn[:12], drawn[28:] = 0, 255
    saved = client.put("/api/clips/clip/keyframe/00002", data=encode_png(drawn), content_type="image/png")
    assert saved.status_code == 200, saved.get_json()
    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate"}).status_code == 202
    assert wait_for_job(client)["state"] == "done"
    assert client.get("/api/clips/clip/foreground.mov").status_code == 404 and not detail_video(client)


@pytest.mark.e2e
def test_a_matte_job_with_exr_serves_the_clips_exr_sequence_as_one_archive(client, tmp_path):
    import OpenEXR

    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate"}).status_code == 202
    assert wait_for_job(client)["state"] == "done"
    assert client.get("/api/clips/clip/exr.zip").status_code == 404, "no EXR matting yet"
    assert client.post("/api/job", json={"clip": "clip", "kind": "matte", "exr": "zip"}).status_code == 202
    assert wait_for_job(client)["state"] == "done"
    detail = client.get("/api/clips/clip").get_json()
    stems = detail["stems"]
    assert detail["result"]["exr"]
    response = client.get("/api/clips/clip/exr.zip")
    assert response.status_code == 200 and "clip_exr.zip" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(f"clip_exr/{s}{suffix}" for s in stems for suffix in ("_alpha.exr", "_fg.exr"))
        (tmp_path / "a.exr").write_bytes(archive.read(f"clip_exr/{stems[1]}_alpha.exr"))
    header, channels = read_exr(tmp_path / "a.exr")
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION and channels["A"].shape == (40, 56)
    # a compression the app does not offer, or EXR with another job, is refused
    assert client.post("/api/job", json={"clip": "clip", "kind": "matte", "exr": "rle"}).status_code == 400
    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate", "exr": "zip"}).status_code == 400


def detail_video(client) -> bool:
    return client.get("/api/clips/clip").get_json()["result"]["video"]


@pytest.mark.e2e
def test_a_job_can_be_cancelled(app, client, workspace):
    started = client.post("/api/job", json={"clip": "clip", "kind": "propagate"})
    assert started.status_code == 202
    runner = app.extensions["trimap_runner"]
    deadline = time.time() + 60
    while runner.current.process is None:  # its command has started
        assert time.time() < deadline and runner.current.state == "running", runner.current.as_json()
        time.sleep(0.05)
    process = runner.current.process
    os.killpg(process.pid, signal.SIGSTOP)  # frozen: however fast this machine, the job cannot end first
    try:
        cancelled = client.post("/api/job/cancel").get_json()["job"]
        assert cancelled["id"] == started.get_json()["job"]["id"]
    finally:
        os.killpg(process.pid, signal.SIGCONT)  # the Ctrl-C the cancel sent is handled now
    job = wait_for_job(client, timeout=60)
    assert job["state"] == "cancelled", job
    assert not list((workspace.parent / "results").rglob("*.tmp")), "no half-written file"


@pytest.mark.unit
def test_bad_job_requests(client):
    assert client.post("/api/job", json={"clip": "nope", "kind": "propagate"}).status_code == 404
    assert client.post("/api/job", json={"clip": "clip", "kind": "rm -rf"}).status_code == 400
    assert client.post("/api/job", data="not json").status_code == 400
