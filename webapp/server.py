"""The web app's routes and its security: thin translations of HTTP to ``webapp.workspace.WorkspaceView``.

Security, as Jupyter does it:

- **Token.** ``tgm.py app`` prints ``http://127.0.0.1:PORT/?token=...``. Only the page route reads
  the token from the address; when it matches (compared as bytes, in constant time) the answer
  sets an HttpOnly, SameSite=Strict cookie ``trimap_token_<port>`` and redirects to ``/``, so the
  token leaves the address bar. A wrong token gets a 403 and no cookie. Every other request needs
  the cookie or an ``X-Token`` header.
- **Host allow-list** against DNS rebinding: ``127.0.0.1:PORT``, ``localhost:PORT``,
  ``[::1]:PORT`` and the address given with ``--host``; any other Host header is refused.
- **State changes** (POST, PUT, DELETE) need a header the browser never adds by itself: the
  page's per-run ``X-XSRF-Token`` (written into the page it serves) or the ``X-Token``.
- ``X-Frame-Options: DENY``, a same-origin Content-Security-Policy, no Referer, no caching; the
  token is never written to a log (request lines are logged without their query).
- Every error is a JSON ``{"error": ...}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flask import Flask, Response, abort, jsonify, redirect, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from inference.layout import ResultFolder
from matting.sequence import FG_SUFFIX
from utils.errors import UserError
from webapp.jobs import APP_DIR, JobRunner
from webapp.settings import (
    TRADES,
    Machine,
    RunSettings,
    SettingsStore,
    estimate_path,
    read_estimate,
    read_tuned,
    recommend,
    workspace_flags,
)
from webapp.workspace import FOREGROUND_VIDEO, ViewError, WorkspaceView

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 32 * 2**20
XSRF_PLACEHOLDER = "__XSRF_TOKEN__"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def machine_names() -> set[str]:
    """This machine's host name, its fully qualified name and the addresses they resolve to."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= set(socket.gethostbyname_ex(name)[2])
        except OSError:
            pass
    return {n for n in names if n}


@dataclass(frozen=True)
class AppConfig:
    """What ``tgm.py app`` was started with (``port``: the one it listens on, for the Host check
    and the cookie's name)."""

    workspace: Path
    save: Path
    token: str
    load: Path | None = None
    cfg: Path | None = None
    background: str = "green"
    host: str = "127.0.0.1"
    port: int = 8765


@dataclass
class Guard:
    """The run's secrets and the hosts it answers to."""

    token: str
    host: str
    port: int
    xsrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def cookie(self) -> str:
        return f"trimap_token_{self.port}"  # two apps on one machine keep their own cookies

    def allowed_hosts(self) -> set[str]:
        """Host headers this app answers to: the loopback names, the ``--host`` address, and for a
        wildcard ``--host`` (0.0.0.0, ::) this machine's name and addresses; with the port (a
        browser leaves out port 80)."""
        names = {"127.0.0.1", "localhost", "[::1]"}
        if self.host in WILDCARD_HOSTS:
            names |= machine_names()
        else:
            names.add(self.host)
        bracketed = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
        hosts = {f"{name}:{self.port}".lower() for name in bracketed}
        if self.port == 80:
            hosts |= {name.lower() for name in bracketed}
        return hosts

    def matches(self, given: str | None, secret: str | None = None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), (secret or self.token).encode())


def without_query(text: str) -> str:
    """A request line or path with every query string cut off (the token may be in one)."""
    return re.sub(r"\?\S*", "", text)


class QuietTokenHandler(WSGIRequestHandler):
    """Werkzeug's request log without query strings: the token never reaches a log. Malformed
    requests (no path parsed yet) are logged by their request line, cut the same way."""

    def log_request(self, code="-", size="-") -> None:
        path = without_query(getattr(self, "path", None) or getattr(self, "requestline", "") or "-")
        command = getattr(self, "command", None) or "-"
        version = getattr(self, "request_version", None) or "-"
        self.log("info", '"%s %s %s" %s %s', command, path, version, code, size)

    def log_error(self, format: str, *args) -> None:
        self.log("error", "%s", without_query(format % args))


def create_app(config: AppConfig) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    view = WorkspaceView(config.workspace, config.save)
    runner = JobRunner(config.save / APP_DIR)
    settings_store = SettingsStore(config.save / APP_DIR)
    machine = functools.cache(Machine.here)
    guard = Guard(config.token, config.host, config.port)
    app.extensions.update(trimap_runner=runner, trimap_view=view, trimap_guard=guard)

    @app.before_request
    def check_request():
        if request.host.lower() not in guard.allowed_hosts():
            abort(
                403, f"this app answers only to {', '.join(sorted(guard.allowed_hosts()))}, not Host {request.host!r}"
            )
        if request.path == "/" and "token" in request.args:
            return None  # the page route checks the token itself
        given = request.headers.get("X-Token") or request.cookies.get(guard.cookie)
        if not guard.matches(given):
            abort(403, "this page needs the token printed by tgm.py app: open the URL it printed (…/?token=…)")
        if request.method not in SAFE_METHODS and not (
            guard.matches(request.headers.get("X-Token"))
            or guard.matches(request.headers.get("X-XSRF-Token"), guard.xsrf)
        ):
            abort(403, "a change needs the page's X-XSRF-Token header (or X-Token); reload the page")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return jsonify(error=f"upload too large: at most {MAX_UPLOAD_BYTES // 2**20} MiB"), 413
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(ViewError)
    def view_error(exc: ViewError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(UserError)
    def user_error(exc: UserError):
        return jsonify(error=str(exc)), 409

    @app.errorhandler(FileNotFoundError)
    def gone(exc: FileNotFoundError):
        return jsonify(error="that file was removed while it was being sent; reload"), 404

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("request %s %s failed", request.method, request.path)
        return jsonify(error=f"the server failed on this request ({type(exc).__name__}); see its log"), 500

    def png(path: Path) -> Response:
        return send_file(path, mimetype="image/png")

    # --- the page -------------------------------------------------------------------------------

    @app.get("/")
    def index():
        if "token" in request.args:
            if not guard.matches(request.args.get("token")):
                abort(403, "wrong token: open the URL tgm.py app printed")
            response = redirect("/")  # the cookie is set; drop the token from the address bar
            response.set_cookie(guard.cookie, guard.token, httponly=True, samesite="Strict", path="/")
            return response
        page = (STATIC / "index.html").read_text().replace(XSRF_PLACEHOLDER, guard.xsrf)
        return Response(page, mimetype="text/html")

    @app.get("/static/<name>")
    def static_file(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            abort(404, f"no static file {name}")
        return send_file(files[name])

    # --- clips ----------------------------------------------------------------------------------

    @app.get("/api/clips")
    def list_clips():
        return jsonify(clips=view.summary(), load=str(config.load) if config.load else None)

    @app.get("/api/clips/<name>")
    def clip_detail(name: str):
        return jsonify(view.detail(name))

    @app.get("/api/clips/<name>/frame/<stem>")
    def frame(name: str, stem: str):
        decoded = view.video_frame_png(name, stem)
        if decoded is not None:
            return Response(decoded, mimetype="image/png")
        return png(view.frame_file(name, stem))

    @app.get("/api/clips/<name>/keyframe/<stem>")
    def keyframe(name: str, stem: str):
        return png(view.keyframe_file(name, stem))

    def upload(field_name: str) -> bytes:
        return request.files[field_name].read() if field_name in request.files else request.get_data()

    @app.put("/api/clips/<name>/keyframe/<stem>")
    def save_keyframe(name: str, stem: str):
        return jsonify(view.save_keyframe(name, stem, upload("trimap")))

    @app.post("/api/clips/<name>/from-mask/<stem>")
    def from_mask(name: str, stem: str):
        try:
            band = int(request.form.get("width", request.args.get("width", 10)))
        except ValueError:
            abort(400, "width must be a whole number of pixels")
        return Response(view.trimap_from_mask(name, stem, upload("mask"), band), mimetype="image/png")

    def band_argument() -> int:
        try:
            return int(request.form.get("band", request.args.get("band", 10)))
        except ValueError:
            abort(400, "band must be a whole number of pixels")

    @app.post("/api/clips/<name>/from-box/<stem>")
    def from_box(name: str, stem: str):
        try:
            box = json.loads(request.form["box"]) if request.form.get("box") else None
        except ValueError:
            abort(400, "box must be JSON: [x0, y0, x1, y1]")
        strokes = [request.files[k].read() if k in request.files else b"" for k in ("fg_strokes", "bg_strokes")]
        png_bytes = view.trimap_from_box(name, stem, box, band_argument(), *strokes)
        return Response(png_bytes, mimetype="image/png")

    @app.post("/api/clips/<name>/from-person/<stem>")
    def from_person(name: str, stem: str):
        return Response(view.trimap_of_person(name, stem, band_argument()), mimetype="image/png")

    @app.get("/api/clips/<name>/thumb/<stem>")
    def thumbnail(name: str, stem: str):
        return send_file(view.thumbnail_file(name, stem), mimetype="image/jpeg", max_age=3600)

    @app.get("/api/clips/<name>/display/<stem>")
    def display(name: str, stem: str):
        try:
            quality = int(request.args.get("quality", 85))
        except ValueError:
            abort(400, "quality must be a whole number")
        return send_file(view.display_file(name, stem, quality), mimetype="image/jpeg")

    @app.get("/api/clips/<name>/result/<stem>")
    def result_trimap(name: str, stem: str):
        return png(view.result_file(name, stem))

    @app.get("/api/clips/<name>/matte/<stem>")
    def matte(name: str, stem: str):
        return png(view.matte_file(name, stem, request.args.get("kind", "comp")))

    @app.get("/api/clips/<name>/foreground.mov")
    def foreground_video(name: str):
        return send_file(view.video_file(name), mimetype="video/quicktime", as_attachment=True,
                         download_name=f"{name}_foreground.mov")  # fmt: skip

    @app.get("/api/clips/<name>/uncertainty.png")
    def uncertainty_plot(name: str):
        return png(view.uncertainty_file(name))

    # --- run settings ---------------------------------------------------------------------------

    def proposal(name: str) -> tuple[RunSettings, dict[str, str]]:
        """The settings proposed for the clip on this machine, and what each trades."""
        height, width = view.frame_size(name)
        return recommend(len(view.stems(name)), height, width, machine(), read_tuned(config.save, name))

    def current_settings(name: str) -> RunSettings:
        return settings_store.load(name) or proposal(name)[0]

    def clip_settings(name: str) -> dict:
        proposed, notes = proposal(name)
        saved = settings_store.load(name)
        return {"settings": asdict(saved or proposed), "saved": saved is not None, "proposed": asdict(proposed),
                "notes": notes, "trades": TRADES, "flags": workspace_flags(saved or proposed),
                "gpu": machine().gpu, "tuned": read_tuned(config.save, name)}  # fmt: skip

    @app.get("/api/clips/<name>/estimate")
    def get_estimate(name: str):
        view.clip_dir(name)
        settings = current_settings(name)
        estimate = read_estimate(estimate_path(config.save / APP_DIR, name, settings), name)
        return jsonify(estimate=estimate, flags=workspace_flags(settings))

    @app.get("/api/clips/<name>/settings")
    def get_settings(name: str):
        return jsonify(clip_settings(name))

    @app.post("/api/clips/<name>/settings")
    def save_settings(name: str):
        view.clip_dir(name)
        try:
            settings = RunSettings.from_json(request.get_json(silent=True), f"settings of {name}")
        except UserError as exc:
            abort(400, str(exc))
        settings_store.save(name, settings)
        return jsonify(clip_settings(name))

    # --- jobs -----------------------------------------------------------------------------------

    @app.get("/api/job")
    def job_state():
        return jsonify(job=runner.current.as_json() if runner.current else None)

    @app.post("/api/job")
    def start_job():
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        name, kind = body.get("clip"), body.get("kind")
        if not isinstance(name, str) or kind not in ("propagate", "estimate", "matte"):
            abort(400, 'send {"clip": NAME, "kind": "propagate", "estimate" or "matte"}')
        source = view.clip_dir(name)
        result = view.result(name)
        if kind == "matte" and (result is None or not result.is_fused(view.stems(name))):
            abort(409, f"{name} has no propagated trimaps yet: run propagation first")
        settings = current_settings(name) if kind in ("propagate", "estimate") else None
        try:
            job = runner.start(name, kind, commands_for(config, name, kind, result, settings, source))
        except RuntimeError as exc:
            abort(409, str(exc))
        return jsonify(job=job.as_json()), 202

    @app.post("/api/job/cancel")
    def cancel_job():
        job = runner.cancel()
        return jsonify(job=job.as_json() if job else None)

    return app


def make_app_server(config: AppConfig) -> tuple[BaseWSGIServer, Flask]:
    """Listen on ``config.host:config.port`` (port 0: one the system picks), then make the app for
    the port actually bound (it names the cookie and the allowed hosts). OSError if it cannot listen."""
    served: dict[str, Flask] = {}
    server = make_server(config.host, config.port, lambda environ, start: served["app"](environ, start),
                         threaded=True, request_handler=QuietTokenHandler)  # fmt: skip
    served["app"] = create_app(dataclasses.replace(config, port=server.server_port))
    return server, served["app"]


def commands_for(
    config: AppConfig,
    clip: str,
    kind: str,
    result: ResultFolder | None = None,
    settings: RunSettings | None = None,
    source: Path | None = None,
) -> list[list[str]]:
    """The commands a job runs: ``tgm.py workspace`` for the clip (finetune unless --load,
    propagate, fuse; reruns redo only what changed) with the clip's run ``settings`` (``estimate``:
    the same with --estimate, which only measures), or ``tgm.py matte`` on its fused trimaps then
    ``tgm.py encode`` of the foregrounds into ``matte/foreground.mov`` (at the rate of the clip's
    ``source`` video when it is one, else 25 fps)."""
    entry = str(Path(__file__).resolve().parents[1] / "tgm.py")
    if kind in ("propagate", "estimate"):
        command = [entry, "workspace", "--workspace", str(config.workspace), "--save", str(config.save),
                   f"--clips={clip}"]  # fmt: skip
        if config.load:
            command += ["--load", str(config.load)]
        elif config.cfg:
            command += ["--cfg", str(config.cfg)]
        settings = settings or RunSettings()
        if kind == "estimate":
            command.append(f"--estimate={estimate_path(config.save / APP_DIR, clip, settings)}")
        return [command + workspace_flags(settings)]
    if result is None:
        raise ValueError(f"matting {clip} needs its result folder")
    rate = ["--source", str(source)] if source is not None and source.is_file() else ["--fps", "25"]
    return [[entry, "matte", "--result", str(result.path), "--dataroot", str(config.workspace),
             "--background", config.background],
            [entry, "encode", "--images_dir", str(result.matte_dir), "--suffix", FG_SUFFIX,
             "--out", str(result.matte_dir / FOREGROUND_VIDEO), *rate]]  # fmt: skip
