"""The app's and the tools' safety: the app's token, Host and XSRF checks, inputs never rewritten,
results that describe their own inputs, locks, durable writes, and no 500s."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from helpers import REPO, app_workspace, run_main
from inference.options import PropagationOptions
from matting.sequence import MatteFrame, MatteSettings, matte_clip
from matting.solve import Solver
from pipeline.clip import run_clip
from utils.errors import UserError
from utils.images import encode_png
from utils.io import LOCK_NAME, atomic_write_bytes, atomic_write_png
from webapp.server import AppConfig, create_app, make_app_server
from webapp.workspace import ViewError, WorkspaceView

TOKEN = "safety-token-456"
HOST = "127.0.0.1:8765"
CPU = torch.device("cpu")


@pytest.fixture
def workspace(tmp_path):
    return app_workspace(tmp_path)


@pytest.fixture
def app(tmp_path, workspace, parity_weights):
    return create_app(AppConfig(workspace, tmp_path / "results", TOKEN, load=parity_weights))


def session_of(app) -> str:
    """The session id the page's cookie holds after the token matched."""
    return app.extensions["trimap_guard"].session


def request(app, method, path, host=HOST, cookie=None, **kwargs):
    client = app.test_client()
    if cookie is not None:
        client.set_cookie(app.extensions["trimap_guard"].cookie, cookie, domain=host.split(":")[0])
    return client.open(path, method=method, base_url=f"http://{host}", **kwargs)


# --- the token, the cookie, the Host ------------------------------------------------------------


@pytest.mark.unit
def test_a_wrong_token_gets_no_cookie_and_no_access(app):
    for path in ("/?token=wrong", "/api/clips?token=wrong", f"/api/clips?token={TOKEN}"):
        response = request(app, "GET", path)
        assert response.status_code == 403, path
        assert "Set-Cookie" not in response.headers, f"{path} handed out a cookie"
    right = request(app, "GET", f"/?token={TOKEN}")
    assert right.status_code == 200 and "trimap_session_8765=" in right.headers["Set-Cookie"]


@pytest.mark.unit
def test_a_foreign_host_is_refused_even_with_the_token(app):
    for host in ("evil.example", "evil.example:8765", "127.0.0.1:9999", "localhost"):
        response = request(app, "GET", "/api/clips", host=host, headers={"X-Token": TOKEN})
        assert response.status_code == 403, host
        assert "answers only to" in response.get_json()["error"]
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert request(app, "GET", "/api/clips", host=host, headers={"X-Token": TOKEN}).status_code == 200, host


@pytest.mark.unit
def test_the_cookie_alone_cannot_change_anything(app):
    png = encode_png(np.full((40, 56), 128, np.uint8))
    plain = request(
        app, "PUT", "/api/clips/clip/keyframe/00001", cookie=session_of(app), data=png, content_type="image/png"
    )
    assert plain.status_code == 403 and "XSRF" in plain.get_json()["error"]
    job = request(app, "POST", "/api/job", cookie=session_of(app), json={"clip": "clip", "kind": "propagate"})
    assert job.status_code == 403
    xsrf = app.extensions["trimap_guard"].xsrf
    page = request(app, "GET", f"/?token={TOKEN}")
    assert xsrf in page.get_data(as_text=True), "the page carries the header token for its own requests"
    good = request(app, "PUT", "/api/clips/clip/keyframe/00001", cookie=session_of(app), data=png,
                   content_type="image/png", headers={"X-XSRF-Token": xsrf})  # fmt: skip
    assert good.status_code == 200


@pytest.mark.unit
def test_security_headers_and_a_cookie_per_port(tmp_path, workspace):
    one = create_app(AppConfig(workspace, tmp_path / "r1", TOKEN, port=8001))
    two = create_app(AppConfig(workspace, tmp_path / "r2", TOKEN, port=8002))
    assert one.extensions["trimap_guard"].cookie != two.extensions["trimap_guard"].cookie
    response = request(one, "GET", "/api/clips", host="127.0.0.1:8001", headers={"X-Token": TOKEN})
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.unit
def test_the_token_is_not_written_to_the_request_log(tmp_path, workspace, caplog):
    server, _ = make_app_server(AppConfig(workspace, tmp_path / "results", TOKEN, port=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            opener.open(f"http://127.0.0.1:{server.server_port}/?token={TOKEN}").read()
        with socket.create_connection(("127.0.0.1", server.server_port)) as raw:  # a malformed request line
            raw.sendall(f"GET /?token={TOKEN} HTTP/9.9 extra\r\n\r\n".encode())
            answer = raw.recv(1000)
    finally:
        server.shutdown()
        server.server_close()
    assert "GET / HTTP" in caplog.text, "the request is logged"
    assert b"400" in answer, "a malformed request is answered (with an error page), not crashed on"
    assert TOKEN not in caplog.text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("token", "status"), [("tökén", 403), ("\u2603" * 30, 403), ("", 403)], ids=["accented", "snowmen", "empty"]
)
def test_odd_tokens_are_refused_not_crashed_on(app, token, status):
    response = request(app, "GET", "/api/clips", headers={"X-Token": token.encode().decode("latin-1")})
    assert response.status_code == status and "error" in response.get_json()


# --- no 500 for a user's or a client's mistake ----------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("body", ["[1, 2]", '"clip"', "null", "{"])
def test_job_bodies_that_are_not_objects_get_400(app, body):
    response = request(app, "POST", "/api/job", headers={"X-Token": TOKEN}, data=body, content_type="application/json")
    assert response.status_code == 400 and "send {" in response.get_json()["error"]


@pytest.mark.unit
def test_an_unreadable_first_frame_is_a_message(app, workspace):
    (workspace / "clip" / "00000_rgb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # cut short
    response = request(app, "GET", "/api/clips/clip", headers={"X-Token": TOKEN})
    assert response.status_code == 422 and "00000_rgb.png" in response.get_json()["error"]


@pytest.mark.unit
def test_a_file_removed_while_being_sent_is_a_404(app, tmp_path, monkeypatch):
    view = app.extensions["trimap_view"]
    monkeypatch.setattr(view, "frame_file", lambda name, stem: tmp_path / "gone.png")
    response = request(app, "GET", "/api/clips/clip/frame/00000", headers={"X-Token": TOKEN})
    assert response.status_code == 404 and "removed" in response.get_json()["error"]


@pytest.mark.unit
def test_a_symlinked_frame_pointing_outside_is_not_served(app, workspace, tmp_path):
    secret = tmp_path / "secret.png"
    shutil.copy(workspace / "clip" / "00002_rgb.png", secret)
    (workspace / "clip" / "00002_rgb.png").unlink()
    (workspace / "clip" / "00002_rgb.png").symlink_to(secret)
    response = request(app, "GET", "/api/clips/clip/frame/00002", headers={"X-Token": TOKEN})
    assert response.status_code == 404 and "inside" in response.get_json()["error"]
    assert request(app, "GET", "/api/clips/clip/frame/00001", headers={"X-Token": TOKEN}).status_code == 200


# --- uploads ------------------------------------------------------------------------------------


def png_claiming(height: int, width: int) -> bytes:
    """A real 1x1 PNG whose header says height x width (its CRC no longer matches: never decoded)."""
    data = bytearray(encode_png(np.zeros((1, 1), np.uint16)))
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.unit
def test_uploads_are_sized_from_the_header_before_any_decoding(workspace, tmp_path, monkeypatch):
    view = WorkspaceView(workspace, tmp_path / "results")

    def no_decoding(*args, **kwargs):
        raise AssertionError("an upload of the wrong size was decoded")

    monkeypatch.setattr("webapp.workspace.cv2.imdecode", no_decoding)
    with pytest.raises(ViewError, match="is 32768x32768 but frame 00001 is 56x40"):
        view.read_upload("clip", "00001", png_claiming(32768, 32768), "trimap")
    _, jpeg = cv2.imencode(".jpg", np.zeros((40, 56, 3), np.uint8))
    with pytest.raises(ViewError, match="send a PNG"):
        view.read_upload("clip", "00001", jpeg.tobytes(), "trimap")


@pytest.mark.unit
def test_frame_sizes_come_from_the_header(workspace, tmp_path, monkeypatch):
    view = WorkspaceView(workspace, tmp_path / "results")
    monkeypatch.setattr("webapp.workspace.cv2.imdecode", lambda *a, **k: pytest.fail("a frame was decoded"))
    detail = view.detail("clip")
    assert (detail["height"], detail["width"]) == (40, 56)


@pytest.mark.unit
def test_saves_of_one_trimap_at_once_keep_the_first_version_as_backup(workspace, tmp_path, monkeypatch):
    import webapp.workspace as workspace_module

    view = WorkspaceView(workspace, tmp_path / "results")
    original = (workspace / "clip" / "00000_trimap.png").read_bytes()
    writing, most = [0], [0]
    write = workspace_module.atomic_write_png

    def slow_write(*args, **kwargs):  # widens the window in which two saves could overlap
        writing[0] += 1
        most[0] = max(most[0], writing[0])
        time.sleep(0.02)
        try:
            write(*args, **kwargs)
        finally:
            writing[0] -= 1

    monkeypatch.setattr(workspace_module, "atomic_write_png", slow_write)
    uploads = []
    for value in range(8):
        drawn = np.full((40, 56), 128, np.uint8)
        drawn[: 2 + value] = 0
        uploads.append(encode_png(drawn))
    threads = [threading.Thread(target=view.save_keyframe, args=("clip", "00000", data)) for data in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (workspace / "clip" / "00000_trimap.orig.png").read_bytes() == original
    assert most[0] == 1, "saves of one trimap are serialised"


@pytest.mark.unit
def test_a_saved_keyframe_is_flushed_to_the_disk(workspace, tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    WorkspaceView(workspace, tmp_path / "results").save_keyframe(
        "clip", "00000", encode_png(np.full((40, 56), 128, np.uint8))
    )
    assert len(synced) >= 4, "the backup and the trimap, each file and its folder"


@pytest.mark.unit
def test_a_full_disk_is_a_message_naming_the_folder(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match=f"the disk holding {tmp_path} is full"):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert not list(tmp_path.iterdir()), "no temporary file is left"


# --- inputs are never rewritten -----------------------------------------------------------------


@pytest.mark.cli
def test_check_in_place_on_a_clip_folder_leaves_the_frames_byte_identical(workspace):
    clip = workspace / "clip"
    frames = {p.name: p.read_bytes() for p in clip.glob("*_rgb.png")}
    run = run_main("tgm.py", "trimap", "check", clip, "--in_place")
    assert run.returncode == 0, run.stderr
    assert {p.name: p.read_bytes() for p in clip.glob("*_rgb.png")} == frames
    assert sorted(p.name for p in clip.glob("*.orig.png")) == ["00000_trimap.orig.png", "00004_trimap.orig.png"]


@pytest.mark.cli
def test_check_reads_every_trimap_before_it_writes_any(workspace):
    clip = workspace / "clip"
    (clip / "00004_trimap.png").write_bytes(b"not an image")
    before = (clip / "00000_trimap.png").read_bytes()
    run = run_main("tgm.py", "trimap", "check", clip, "--in_place")
    assert run.returncode == 2 and "00004_trimap.png" in run.stderr
    assert (clip / "00000_trimap.png").read_bytes() == before and not list(clip.glob("*.orig.png"))


@pytest.mark.cli
def test_import_vm108_refuses_to_overwrite_an_import(tmp_path):
    from test_distributed import fake_vm108

    root, out = tmp_path / "VideoMatting108", tmp_path / "out"
    fake_vm108(root)
    assert run_main("tgm.py", "import-vm108", "--root", root, "--out", out).returncode == 0
    frame = out / "val" / "v1" / "0001_rgb.png"
    atomic_write_png(frame, np.zeros((30, 40, 3), np.uint8))  # the user's own edit of the imported frame
    edited = frame.read_bytes()
    again = run_main("tgm.py", "import-vm108", "--root", root, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert frame.read_bytes() == edited
    assert run_main("tgm.py", "import-vm108", "--root", root, "--out", out, "--overwrite").returncode == 0
    assert frame.read_bytes() != edited


@pytest.mark.cli
def test_the_app_refuses_a_save_folder_inside_the_workspace(workspace):
    run = run_main("tgm.py", "app", "--workspace", workspace, "--save", workspace / "results", "--port", "0")
    assert run.returncode == 2 and "is inside --workspace" in run.stderr


@pytest.mark.cli
def test_a_second_app_on_one_save_folder_is_refused(workspace, tmp_path):
    with held_elsewhere(tmp_path / "results" / ".app"):
        run = run_main("tgm.py", "app", "--workspace", workspace, "--save", tmp_path / "results", "--port", "0")
    assert run.returncode == 2 and "is being written by process 4242" in run.stderr


# --- results describe their own inputs ----------------------------------------------------------


@pytest.mark.e2e
def test_a_corrected_trimap_changes_the_mattes_of_its_frame(workspace, tmp_path):
    clip = workspace / "clip"
    trimaps = tmp_path / "trimaps"
    shutil.copytree(tmp_path / "gt" / "clip", trimaps, ignore=shutil.ignore_patterns("*_alpha.png"))
    frames = [MatteFrame(f"{t:05d}", t, clip / f"{t:05d}_rgb.png", trimaps / f"{t:05d}_trimap.png") for t in range(5)]
    settings = MatteSettings(tmp_path / "matte", Solver("cf", 1e-5))
    first = matte_clip(frames, settings)
    assert sorted(first.done) == [f.stem for f in frames]
    alpha_before = (tmp_path / "matte" / "00002_alpha.png").read_bytes()
    corrected = cv2.imread(str(trimaps / "00002_trimap.png"), cv2.IMREAD_GRAYSCALE)
    corrected[:, : corrected.shape[1] // 2] = 0  # the user paints half the frame background
    atomic_write_png(trimaps / "00002_trimap.png", corrected)
    second = matte_clip(frames, settings)  # no overwrite, as the app's job runs it
    assert second.done == ["00002"] and sorted(second.skipped) == ["00000", "00001", "00003", "00004"]
    assert (tmp_path / "matte" / "00002_alpha.png").read_bytes() != alpha_before


@pytest.mark.e2e
def test_an_edited_keyframe_frame_recomputes_the_parts_that_hold_it(tmp_path, parity_weights):
    def run(save):
        clip = scan_clip(tmp_path / "ws" / "clip")
        return run_clip(clip, save, PropagationOptions(), CPU, checkpoint=parity_weights, fuse=False)

    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=10, size=(40, 56), keyframes=(0, 5, 9), seed=4)
    first = run(tmp_path / "rerun")
    assert first.computed == list(range(len(first.computed)))
    frame = tmp_path / "ws" / "clip" / "00005_rgb.png"
    image = cv2.imread(str(frame))
    atomic_write_png(frame, 255 - image)  # the keyframe's own frame, edited in place
    rerun = run(tmp_path / "rerun")
    fresh = run(tmp_path / "fresh")
    assert rerun.computed, "parts holding keyframe 5 in their memory are computed again"
    rerun_dir, fresh_dir = rerun.result, fresh.result
    for k in fresh_dir.part_dirs():
        for stem in fresh_dir.part_stems(k):
            assert rerun_dir.part_png(k, stem).read_bytes() == fresh_dir.part_png(k, stem).read_bytes(), (k, stem)


@pytest.mark.e2e
def test_a_part_png_cut_short_is_not_reused(tmp_path, parity_weights):
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=8, size=(40, 56), keyframes=(0, 7), seed=5)
    clip = scan_clip(tmp_path / "ws" / "clip")
    first = run_clip(clip, tmp_path / "out", PropagationOptions(), CPU, checkpoint=parity_weights, fuse=False)
    png = first.result.part_png(0, clip.stems[3])
    png.write_bytes(png.read_bytes()[:50])  # as a power loss may leave it
    again = run_clip(clip, tmp_path / "out", PropagationOptions(), CPU, checkpoint=parity_weights, fuse=False)
    assert 0 in again.computed and cv2.imread(str(png)) is not None


@contextlib.contextmanager
def held_elsewhere(folder):
    """The folder's lock held as another process holds it (flock belongs to an open file, so
    another open of the lock file in this process is refused just the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"process 4242")
        yield
    finally:
        os.close(fd)


@pytest.mark.unit
def test_a_second_writer_of_a_result_folder_is_refused(tmp_path, parity_weights):
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=4, size=(40, 56), keyframes=(0,), seed=5)
    clip = scan_clip(tmp_path / "ws" / "clip")
    folder = tmp_path / "out" / "clip_mem5"
    folder.mkdir(parents=True)
    with held_elsewhere(folder), pytest.raises(UserError, match="is being written by process 4242"):
        run_clip(clip, tmp_path / "out", PropagationOptions(), CPU, checkpoint=parity_weights, fuse=False)
    assert run_clip(clip, tmp_path / "out", PropagationOptions(), CPU, checkpoint=parity_weights, fuse=False).computed


# --- jobs: a cancel is never lost, a stopped app leaves no job behind ---------------------------


@pytest.mark.e2e
def test_a_cancel_while_a_job_starts_its_command_is_not_lost(tmp_path, monkeypatch):
    from webapp import jobs

    runner = jobs.JobRunner(tmp_path)
    real_popen = jobs.subprocess.Popen
    cancelled = threading.Event()

    def slow_start(*args, **kwargs):  # a cancel arrives after the flag was checked, before the process exists
        threading.Thread(target=lambda: (runner.cancel(), cancelled.set()), daemon=True).start()
        time.sleep(0.5)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(jobs.subprocess, "Popen", slow_start)
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    job = runner.start("clip", "propagate", [[str(sleeper)]])
    deadline = time.monotonic() + 30
    while job.state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled.is_set() and job.state == "cancelled", job.as_json()
    assert time.monotonic() < deadline - 15, "the command was stopped, not waited for"


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_app_stopped_by_a_signal_stops_its_job(tmp_path, workspace, parity_weights, sig):
    app = subprocess.Popen(
        [sys.executable, str(REPO / "tgm.py"), "app", "--workspace", str(workspace), "--save", str(tmp_path / "res"),
         "--load", str(parity_weights), "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = None
        for line in app.stdout:
            if "open http://" in line:
                url = line.split("open ", 1)[1].strip()
                break
        assert url, "the app printed its address"
        base, token = url.split("/?token=")
        start = urllib.request.Request(f"{base}/api/job", data=b'{"clip": "clip", "kind": "propagate"}',
                                       headers={"X-Token": token, "Content-Type": "application/json"})  # fmt: skip
        assert urllib.request.urlopen(start).status == 202
        deadline = time.monotonic() + 60
        while not children_of(app.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (job,) = children_of(app.pid)
        os.kill(job, signal.SIGSTOP)  # the event: the job runs; hold it there so it cannot finish first
        app.send_signal(sig)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):  # it may already be gone: then it ended with the app
            os.kill(job, signal.SIGCONT)
        app.wait(timeout=60)
        assert app.returncode == 0
        assert not Path(f"/proc/{job}").exists(), "the job's process ended with the app"
    finally:
        if app.poll() is None:
            app.kill()


@pytest.mark.unit
def test_a_clip_appears_once_its_frames_are_there_and_a_refusal_is_a_message(app, workspace):
    view = app.extensions["trimap_view"]
    assert list(view.clips()) == ["clip"]
    (workspace / "new").mkdir()  # being extracted: no frames yet
    assert list(view.clips()) == ["clip"]
    shutil.copy(workspace / "clip" / "00000_rgb.png", workspace / "new" / "00000_rgb.png")
    assert list(view.clips()) == ["clip", "new"]

    def full(*args):
        raise UserError("the disk holding /x is full")

    view.save_keyframe = full
    png = encode_png(np.full((40, 56), 128, np.uint8))
    response = request(app, "PUT", "/api/clips/clip/keyframe/00001", headers={"X-Token": TOKEN}, data=png)
    assert response.status_code == 409 and "is full" in response.get_json()["error"]


@pytest.mark.cli
def test_the_old_spelling_of_a_required_renamed_flag_works(tmp_path):
    for t in range(2):
        atomic_write_png(tmp_path / f"{t:05d}_comp.png", np.full((16, 16, 3), 60 * t, np.uint8))
    run = run_main("tgm.py", "encode", "--frames", tmp_path, "--out", tmp_path / "v.avi")
    assert run.returncode == 0, run.stderr
    assert "--frames is deprecated: write --images_dir" in run.stderr and (tmp_path / "v.avi").exists()
