"""The app on a shared machine: links planted in the folders it is given lead none of its reads or
writes elsewhere, no local user can hold its threads, malformed input is a 400, the cookie opens this
app only, and a run that cannot fit on the disk does not start."""

from __future__ import annotations

import collections
import json
import os
import socket
import threading
import time
import zlib

import numpy as np
import pytest
from test_app import TOKEN, Client, as_page, stranger

import webapp.server as server_module
from dataset.synthetic import make_synthetic_clip
from dataset.video import write_video
from helpers import app_workspace
from utils.errors import UserError
from utils.images import encode_png
from utils.io import LOCK_NAME, FolderLock
from webapp import jobs
from webapp.server import AppConfig, create_app, make_app_server


@pytest.fixture
def workspace(tmp_path):
    return app_workspace(tmp_path)


@pytest.fixture
def save(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    return folder


@pytest.fixture
def app(workspace, save, parity_weights):
    return create_app(AppConfig(workspace, save, TOKEN, load=parity_weights))


@pytest.fixture
def precious(tmp_path):
    """A file of someone's, outside every folder the app was given."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "precious.txt"
    path.write_text("a week of work\n")
    return path


# --- the folder lock ------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("planted", ["symlink", "hardlink"])
def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(save, precious, planted):
    app_dir = save / ".app"
    app_dir.mkdir()
    (os.symlink if planted == "symlink" else os.link)(precious, app_dir / LOCK_NAME)
    with pytest.raises(UserError, match="not the lock file"), FolderLock(app_dir, "app (--save)"):
        pass
    assert precious.read_text() == "a week of work\n"


@pytest.mark.unit
def test_a_lock_file_the_tool_did_not_make_is_never_written(save):
    (save / LOCK_NAME).write_text("someone's notes, named .lock")
    with FolderLock(save, "run (--save)"):
        pass
    assert (save / LOCK_NAME).read_text() == "someone's notes, named .lock"
    earlier = save / "earlier"
    earlier.mkdir()
    (earlier / LOCK_NAME).write_text("process 4242")  # an earlier run's: it now names this holder
    with FolderLock(earlier, "run (--save)"):
        assert (earlier / LOCK_NAME).read_text() == f"process {os.getpid()}", "says who holds it, for a second writer"
    fresh = save / "fresh"
    with FolderLock(fresh, "run (--save)"):
        assert (fresh / LOCK_NAME).read_text() == f"process {os.getpid()}"


# --- the job's progress file ----------------------------------------------------------------------


@pytest.mark.unit
def test_progress_files_have_names_no_one_can_guess_and_are_made_exclusively(save):
    folder = save / ".app"
    folder.mkdir()
    names = {jobs.new_progress_file(folder).name for _ in range(5)}
    assert len(names) == 5 and not any(str(os.getpid()) in name for name in names)


@pytest.mark.unit
def test_a_progress_poll_reads_a_bounded_tail_and_nothing_but_a_regular_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    with open(path, "w") as handle:
        handle.write("x" * (8 << 20) + "\n" + json.dumps({"desc": "clip", "n": 3, "total": 9}) + "\n")
    job = jobs.Job(1, "clip", "propagate", [["x"]], path)
    read = []
    pread = os.pread
    monkeypatch.setattr(jobs.os, "pread", lambda fd, size, offset: read.append(size) or pread(fd, size, offset))
    assert job.progress() == {"desc": "clip", "n": 3, "total": 9}
    assert sum(read) <= jobs.PROGRESS_TAIL, "a long report file is not read whole on every poll"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert jobs.Job(2, "clip", "propagate", [["x"]], fifo).progress() is None
    assert time.monotonic() - started < 1, "a FIFO does not stall the server"


@pytest.mark.e2e
def test_a_finished_job_leaves_no_progress_file(save, tmp_path):
    runner = jobs.JobRunner(save)
    script = tmp_path / "quick.py"
    script.write_text("print('done')\n")
    job = runner.start("clip", "propagate", [[str(script)]])
    runner._thread.join(30)
    assert job.state == "done" and not job.progress_file.exists()
    assert not list((save / ".app").glob("progress-*"))


# --- clips whose real location is outside the workspace -------------------------------------------


@pytest.mark.unit
def test_a_video_or_a_folder_linked_from_outside_is_no_clip(tmp_path, workspace, app):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    frames = [np.full((32, 48, 3), 100, np.uint8)] * 3
    write_video(outside / "secret.mp4", frames, 25)
    (workspace / "x.mp4").symlink_to(outside / "secret.mp4")
    make_synthetic_clip(outside, "private", num_frames=3, size=(32, 48), keyframes=(0,), seed=1)
    (workspace / "linked").symlink_to(outside / "private")
    client = as_page(app)
    names = [c["name"] for c in client.get("/api/clips").get_json()["clips"]]
    assert names == ["clip"], names
    for path in ("/api/clips/x/frame/00000", "/api/clips/x/thumb/00000", "/api/clips/linked/frame/00000"):
        assert client.get(path).status_code == 404, path


# --- writes under .app ----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("linked", ["thumbs", ".app"])
def test_no_cache_is_written_through_a_linked_app_folder(save, app, tmp_path, linked):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    if linked == ".app":
        (save / ".app").symlink_to(outside)
    else:
        (save / ".app").mkdir()
        (save / ".app" / "thumbs").symlink_to(outside)
    response = as_page(app).get("/api/clips/clip/thumb/00000")
    assert response.status_code in (403, 404, 409) and "link" in response.get_json()["error"]
    assert list(outside.rglob("*")) == [], "nothing was written outside --save"


@pytest.mark.unit
def test_settings_and_jobs_refuse_a_linked_app_folder(save, app, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (save / ".app").symlink_to(outside)
    client = as_page(app)
    assert client.post("/api/clips/clip/settings", json={"fast": True}).status_code >= 400
    assert client.post("/api/job", json={"clip": "clip", "kind": "propagate"}).status_code == 409
    assert list(outside.rglob("*")) == []


# --- the cookie -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_cookie_holds_a_session_id_accepted_only_as_the_cookie(app):
    guard = app.extensions["trimap_guard"]
    issued = stranger(app).get(f"/?token={TOKEN}").headers["Set-Cookie"]
    assert guard.session in issued and TOKEN not in issued, "the token itself never sits in a cookie"
    assert stranger(app).get("/api/clips", headers={"X-Token": guard.session}).status_code == 403
    assert Client(app, cookie=TOKEN).get("/api/clips/clip/frame/00000").status_code == 403, "the token is no session"
    assert Client(app, cookie=guard.session).get("/api/clips/clip/frame/00000").status_code == 200


@pytest.mark.unit
def test_the_cookie_alone_fetches_pictures_and_never_the_pages_key_data_or_a_change(app):
    # A browser sends the cookie to every port of 127.0.0.1: a program listening on another port
    # may see it. With it alone: pictures, and the page without its key; no data, no job, no change.
    guard = app.extensions["trimap_guard"]
    cookie = Client(app, cookie=guard.session)
    assert cookie.get("/api/clips/clip/thumb/00000").status_code == 200
    page = cookie.get("/")
    assert page.status_code == 200 and guard.xsrf not in page.get_data(as_text=True), "a reload holds no key"
    for path in ("/api/clips", "/api/clips/clip", "/api/job", "/api/clips/clip/settings"):
        assert cookie.get(path).status_code == 403, path
    ours = {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}
    assert cookie.post("/api/clips/clip/settings", json={"fast": True}, headers=ours).status_code == 403
    # the printed address gives the page its key, once; the page's requests carry it
    assert guard.xsrf in stranger(app).get(f"/?token={TOKEN}").get_data(as_text=True)
    assert stranger(app).get("/api/clips", headers={"X-XSRF-Token": guard.xsrf}).status_code == 200


@pytest.mark.unit
def test_a_write_from_another_origin_is_refused(app):
    page = as_page(app)
    body = {"fast": True}
    assert (
        page.post("/api/clips/clip/settings", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    )
    assert page.post("/api/clips/clip/settings", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    ours = {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}
    assert page.post("/api/clips/clip/settings", json=body, headers=ours).status_code == 200


# --- links the jobs would follow, files read on every poll --------------------------------------


@pytest.mark.unit
def test_a_keyframe_saved_over_a_link_copies_nothing_from_where_it_leads(app, workspace, precious):
    trimap = workspace / "clip" / "00001_trimap.png"
    trimap.symlink_to(precious)
    saved = as_page(app).put("/api/clips/clip/keyframe/00001", data=encode_png(np.full((40, 56), 128, np.uint8)),
                             content_type="image/png")  # fmt: skip
    assert saved.status_code == 409 and "link" in saved.get_json()["error"]
    assert not list(workspace.glob("clip/*.orig.png")), "no copy of the file the link leads to"
    assert trimap.is_symlink() and precious.read_text() == "a week of work\n"


@pytest.mark.unit
@pytest.mark.parametrize("planted", ["result", "configs", "train_log", "frame"])
def test_a_job_does_not_start_through_a_link_planted_where_it_writes_or_reads(app, workspace, save, tmp_path,
                                                                              planted):  # fmt: skip
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    if planted == "frame":  # a frame of the clip that is someone's picture elsewhere
        (outside / "photo.png").write_bytes((workspace / "clip" / "00002_rgb.png").read_bytes())
        (workspace / "clip" / "00002_rgb.png").unlink()
        (workspace / "clip" / "00002_rgb.png").symlink_to(outside / "photo.png")
    else:
        name = {"result": "clip_mem5", "configs": "configs", "train_log": "train_log"}[planted]
        (save / name).symlink_to(outside)
    started = as_page(app).post("/api/job", json={"clip": "clip", "kind": "propagate"})
    assert started.status_code == 409 and "link" in started.get_json()["error"], started.get_json()
    assert sorted(p.name for p in outside.iterdir()) == sorted(["keep.txt"] + (["photo.png"] * (planted == "frame")))


@pytest.mark.unit
def test_a_result_folder_named_by_the_tool_is_never_a_link(tmp_path):
    from inference.layout import ResultFolder

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "clip_mem5").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="is a link"), ResultFolder(tmp_path / "clip_mem5").lock():
        pass
    assert list((tmp_path / "elsewhere").iterdir()) == [], "not even its lock file"
    with FolderLock(tmp_path / "clip_mem5", "matting (--out)"):  # a folder the user named: theirs to link
        pass


@pytest.mark.unit
def test_the_apps_own_folder_is_refused_when_anyone_may_write_in_it(save, app):
    (save / ".app").mkdir()
    os.chmod(save / ".app", 0o777)  # prepared by someone else: its estimates and settings could be forged
    saved = as_page(app).post("/api/clips/clip/settings", json={"fast": True})
    assert saved.status_code == 409 and "anyone may write" in saved.get_json()["error"]


@pytest.mark.unit
def test_files_read_on_every_poll_are_never_waited_on(app, save, workspace, tmp_path):
    from dataset.video import source_fps

    result = save / "clip_mem5"
    result.mkdir()
    os.mkfifo(result / "uncertainty.json")  # a FIFO: an open for reading would wait for a writer
    os.mkfifo(workspace / "clip" / "source.json")
    started = time.monotonic()
    assert as_page(app).get("/api/clips/clip").status_code == 200
    assert source_fps(workspace / "clip") is None
    assert time.monotonic() - started < 2


@pytest.mark.unit
def test_a_frame_too_large_to_show_is_refused_before_it_is_decoded(app, workspace):
    # a PNG header claiming 30000 x 30000 pixels (900 megapixels; a few kilobytes of zeros would
    # decode to gigabytes)
    frame = workspace / "clip" / "00001_rgb.png"
    data = frame.read_bytes()
    ihdr = b"IHDR" + (30000).to_bytes(4, "big") * 2 + data[24:29]  # a valid chunk: its CRC matches
    frame.write_bytes(data[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + data[33:])
    response = as_page(app).get("/api/clips/clip/thumb/00001")
    assert response.status_code == 422 and "megapixels" in response.get_json()["error"]


# --- idle sockets ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_idle_connections_are_closed_and_bounded(workspace, save, parity_weights, monkeypatch):
    monkeypatch.setattr(server_module.QuietTokenHandler, "timeout", 1)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    server, _ = make_app_server(AppConfig(workspace, save, TOKEN, load=parity_weights, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = threading.active_count()
    sockets = []
    try:
        for _ in range(12):  # each sends half a request and then nothing
            connection = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            connection.sendall(b"GET /api/clips HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(connection)
        time.sleep(0.3)
        assert threading.active_count() - before <= 4, "a thread each for at most MAX_CONNECTIONS"
        started = time.monotonic()
        assert sockets[0].recv(100) == b"" and time.monotonic() - started < 4, "a silent connection is closed"
    finally:
        for connection in sockets:
            connection.close()
        server.shutdown()
        server.server_close()


@pytest.mark.unit
def test_half_sent_requests_filling_every_slot_do_not_keep_the_page_out(workspace, save, parity_weights,
                                                                        monkeypatch):  # fmt: skip
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    server, _ = make_app_server(AppConfig(workspace, save, TOKEN, load=parity_weights, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sockets = []
    try:
        for _ in range(8):  # every slot held by a request that never finishes its headers
            connection = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            connection.sendall(b"GET /api/clips HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(connection)
        time.sleep(0.3)
        page = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        page.sendall(b"GET /api/clips HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Token: %s\r\n\r\n"
                     % (server.server_port, TOKEN.encode()))  # fmt: skip
        assert page.recv(100).startswith(b"HTTP/1.1 200"), "a whole request takes a half-sent one's slot"
        page.close()
    finally:
        for connection in sockets:
            connection.close()
        server.shutdown()
        server.server_close()


@pytest.mark.unit
def test_a_request_trickled_a_byte_at_a_time_is_dropped_at_its_deadline(workspace, save, parity_weights,
                                                                        monkeypatch):  # fmt: skip
    monkeypatch.setattr(server_module.QuietTokenHandler, "timeout", 5)
    monkeypatch.setattr(server_module, "HEADER_DEADLINE", 1)
    server, _ = make_app_server(AppConfig(workspace, save, TOKEN, load=parity_weights, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        connection.sendall(b"GET /api/clips HTTP/1.1\r\n")
        started, closed = time.monotonic(), False
        for _ in range(20):  # a header byte every 0.3 s: never silent for the read timeout
            try:
                connection.sendall(b"X")
                time.sleep(0.3)
                closed = connection.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                continue  # still open, nothing to read
            except OSError:
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - started < 4, "dropped at the deadline, not at every byte's read timeout"
        connection.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.unit
def test_bytes_trickled_after_a_request_do_not_hold_its_connection(workspace, save, parity_weights, monkeypatch):
    monkeypatch.setattr(server_module.QuietTokenHandler, "timeout", 5)
    server, _ = make_app_server(AppConfig(workspace, save, TOKEN, load=parity_weights, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        connection.sendall(b"GET /api/clips HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % server.server_port)
        started, answer, closed = time.monotonic(), b"", None
        while time.monotonic() - started < 4:  # a byte every 3 ms: werkzeug drains while bytes keep coming
            try:
                connection.sendall(b"x")
                time.sleep(0.003)
                chunk = connection.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:  # reset: closed
                chunk = b""
            if chunk == b"":
                closed = time.monotonic() - started
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), answer[:40]
        assert closed is not None and closed < 1, f"closed after its answer, not {closed} s later"
        connection.close()
    finally:
        server.shutdown()
        server.server_close()


# --- malformed input is a 400 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    ["[NaN, 1, 20, 20]", "[1, 1, Infinity, 20]", "[true, 1, 20, 20]", "[" * 5000 + "]" * 5000],
    ids=["nan", "infinity", "boolean", "nested"],
)
@pytest.mark.unit
def test_a_bad_box_is_a_400(app, box):
    response = as_page(app).post("/api/clips/clip/from-box/00001", data={"box": box, "band": "10"})
    assert response.status_code == 400, response.get_json()


@pytest.mark.unit
def test_deeply_nested_json_bodies_are_a_400(app):
    page = as_page(app)
    nested = "[" * 100000 + "]" * 100000
    for path in ("/api/clips/clip/settings", "/api/job"):
        response = page.post(path, data=nested, content_type="application/json")
        assert response.status_code == 400, path


@pytest.mark.unit
def test_a_device_this_machine_lacks_is_refused_when_saved(app):
    response = as_page(app).post("/api/clips/clip/settings", json={"device": "cuda:999"})
    assert response.status_code == 400 and "cuda:999" in response.get_json()["error"]


@pytest.mark.unit
def test_a_frame_with_a_very_long_name_is_served_and_refused_as_a_keyframe_with_why(tmp_path, parity_weights):
    workspace = tmp_path / "ws"
    clip = workspace / "long"
    clip.mkdir(parents=True)
    stem = "f" * 247  # <stem>_rgb.png is 255 bytes, the most a file name may have
    for index in range(2):
        (clip / f"{stem[:-1]}{index}_rgb.png").write_bytes(encode_png(np.full((24, 32, 3), 90, np.uint8)))
    page = as_page(create_app(AppConfig(workspace, tmp_path / "results", TOKEN, load=parity_weights)))
    first = f"{stem[:-1]}0"
    assert page.get(f"/api/clips/long/thumb/{first}").status_code == 200, "its cached JPEG gets a short name"
    saved = page.put(f"/api/clips/long/keyframe/{first}", data=encode_png(np.full((24, 32), 128, np.uint8)),
                     content_type="image/png")  # fmt: skip
    assert saved.status_code == 400 and "too long" in saved.get_json()["error"]


@pytest.mark.unit
def test_one_unreadable_video_leaves_the_clip_list_working(workspace, app):
    (workspace / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    response = as_page(app).get("/api/clips")
    assert response.status_code == 200
    clips = {c["name"]: c for c in response.get_json()["clips"]}
    assert clips["clip"]["frames"] == 5 and "error" in clips["broken"]


# --- a disk too small for the run -----------------------------------------------------------------


@pytest.mark.unit
def test_a_run_the_estimate_says_cannot_fit_does_not_start(app, save, monkeypatch):
    page = as_page(app)
    monkeypatch.setattr(server_module, "read_estimate", lambda path, clip: {"disk_bytes": 50 * 2**30, "seconds": 60})
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(server_module.shutil, "disk_usage", lambda folder: usage(2**40, 2**40 - 2**30, 2**30))
    shown = page.get("/api/clips/clip/estimate").get_json()
    assert shown["free_bytes"] == 2**30, "the page can warn before the run"
    refused = page.post("/api/job", json={"clip": "clip", "kind": "propagate"})
    assert (
        refused.status_code == 409
        and "51200 MiB" in refused.get_json()["error"]
        and "1024 MiB are free" in (refused.get_json()["error"])
    )


@pytest.mark.e2e
def test_a_failed_job_shows_its_cause_not_a_summary(save, tmp_path):
    runner = jobs.JobRunner(save)
    script = tmp_path / "fails.py"
    long_cause = "the disk holding /results/clip_mem5/part0 is full (No space left on device); free some space"
    script.write_text(  # the cause comes first; a long line keeps its start
        "import sys\n"
        f"print('error: 1 clip(s) failed: clip: {long_cause}; fix and rerun' + ' (and more)' * 40)\n"
        "sys.exit(2)\n"
    )
    job = runner.start("clip", "propagate", [[str(script)]])
    runner._thread.join(30)
    assert job.state == "failed" and job.message.startswith("error: 1 clip(s) failed: clip: the disk holding")
    assert "is full" in job.message


@pytest.mark.cli
def test_the_workspace_says_why_its_clip_failed_in_its_last_line(tmp_path, workspace, parity_weights):
    from helpers import run_main

    (workspace / "clip" / "00004_trimap.png").write_bytes(encode_png(np.full((10, 10), 128, np.uint8)))
    run = run_main(
        "tgm.py", "workspace", "--workspace", workspace, "--save", tmp_path / "out", "--load", parity_weights
    )
    last = [line for line in run.stderr.splitlines() if line.startswith("error:")][-1]
    assert run.returncode == 2 and "clip: " in last and "00004_trimap.png" in last, last
