"""The web app's routes and its security: thin translations of HTTP to ``webapp.workspace.WorkspaceView``.

Security, as Jupyter does it:

- **Token.** ``tgm.py app`` prints ``http://127.0.0.1:PORT/?token=...``. Only the page route reads
  the token from the address; when it matches (compared as bytes, in constant time) that answer,
  and only that one, holds the page's per-run key (``X-XSRF-Token``), which the page keeps for its
  tab and sends with every request (it drops the token from the address bar), and sets an
  HttpOnly, SameSite=Strict cookie ``trimap_session_<port>`` holding a random session id. A wrong
  token gets a 403, no key and no cookie. Every request needs the page's key or the token in an
  ``X-Token`` header (scripts), except what the cookie alone fetches (``COOKIE_ROUTES``: the page
  without its key, its static files, and pictures and files of clips, which the browser's image
  and download requests ask for without headers). A browser sends the cookie to every port of
  127.0.0.1, so a program listening on another port may see it: it opens no data, no job and no
  change, and the session id is never the token. (Whoever reads the browser's storage can still
  act as the page: that is the browser's trust, as for any local web app.)
- **Host allow-list** against DNS rebinding: ``127.0.0.1:PORT``, ``localhost:PORT``,
  ``[::1]:PORT`` and the address given with ``--host``; any other Host header is refused.
- **State changes** (POST, PUT, DELETE) need a header the browser never adds by itself (the page's
  key or the token, as every data request does), and a browser's ``Origin`` must be the app's own
  and its ``Sec-Fetch-Site``, when sent, same-origin.
- **Connections**: a connection that sends nothing for ``READ_TIMEOUT`` seconds is closed, a
  request whose headers take more than ``HEADER_DEADLINE`` seconds in all is dropped, its reading
  side is shut once its answer is sent (nothing trickled after a request keeps it), and at most
  ``MAX_CONNECTIONS`` are served at once (more are closed at once): a local user holding
  connections open costs the page at most that many slots, each for seconds.
- **Bodies**: JSON is parsed with a bound on nesting and without NaN or Infinity; bad input is a 400.
- ``X-Frame-Options: DENY``, a same-origin Content-Security-Policy, no Referer, no caching; the
  token is never written to a log (request lines are logged without their query).
- Every error is a JSON ``{"error": ...}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flask import Flask, Response, abort, jsonify, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from config import load_config
from dataset.clip import TRIMAP_SUFFIX
from dataset.video import DEFAULT_FPS, source_fps
from inference.layout import ResultFolder, results_of
from matting.sequence import FG_SUFFIX
from utils.errors import UserError
from utils.exr import COMPRESSIONS as EXR_COMPRESSIONS
from utils.io import NotARegularFileError, open_regular, private_subfolder
from webapp.jobs import APP_DIR, JobRunner
from webapp.settings import (
    ESTIMATES_DIR,
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
START_NOTES = {  # what the page says the network starts from, in the Run section
    None: "",
    "checkpoint": "",
    "random": "The network starts from RANDOM weights (no TRAIN.LOAD_CKPT): it learns your subject from the "
    "keyframes alone, so expect rough trimaps away from them. For real footage set TRAIN.LOAD_CKPT to the released "
    "weights (trimap_ep150.pth) in the config the app was started with.",
}
MAX_UPLOAD_BYTES = 32 * 2**20
XSRF_PLACEHOLDER = "__XSRF_TOKEN__"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
READ_TIMEOUT = 30  # seconds a connection may stay silent (a request half sent, an idle keep-alive)
HEADER_DEADLINE = 20  # seconds a request's line and headers may take to arrive in all
MAX_CONNECTIONS = 64  # served at once: the page needs a handful (frames, thumbnails, the job poll)
MAX_JSON_DEPTH = 20
# What the session cookie alone may fetch (the browser's <img>, <video> and download links): the page
# without its key, its static files and pictures and files of clips; never the JSON API, never a change.
COOKIE_ROUTES = re.compile(
    r"/|/static/[^/]+|/api/clips/[^/]+/(frame|keyframe|thumb|display|result|matte)/[^/]+"
    r"|/api/clips/[^/]+/(uncertainty\.png|foreground\.mov|exr\.zip)"
)


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's host name, its fully qualified name and the addresses they resolve to (looked
    up once: a slow name server must not slow every request)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= set(socket.gethostbyname_ex(name)[2])
        except OSError:
            pass
    return frozenset(n for n in names if n)


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
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # the cookie's value

    @property
    def cookie(self) -> str:
        return f"trimap_session_{self.port}"  # two apps on one machine keep their own cookies

    def origin_allowed(self, origin: str) -> bool:
        """A browser's Origin header names this app (http://one of the allowed hosts)."""
        return origin.lower().removeprefix("http://") in self.allowed_hosts() and origin.lower().startswith("http://")

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


def parse_json(text: str | bytes, problem: str) -> object:
    """JSON from a request, or a 400 saying ``problem``: nesting deeper than MAX_JSON_DEPTH, NaN and
    Infinity are refused (they reach no setting or box as anything but an error)."""

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number JSON carries")

    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    depth = most = 0
    for char in text:  # brackets inside strings count too: a deep string is no settings file either
        if char in "[{":
            depth += 1
            most = max(most, depth)
        elif char in "]}":
            depth -= 1
    if most > MAX_JSON_DEPTH:
        abort(400, f"{problem} (nested more than {MAX_JSON_DEPTH} deep)")
    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError):
        abort(400, problem)


def json_body(problem: str = "the body is not JSON this app takes") -> object:
    """The request's JSON body (None when it is not JSON: the route says what it wants; a 400 saying
    ``problem`` when it says it is JSON and is not)."""
    if not request.is_json:
        return None
    return parse_json(request.get_data(cache=True), problem)


def without_query(text: str) -> str:
    """A request line or path with every query string cut off (the token may be in one)."""
    return re.sub(r"\?\S*", "", text)


class QuietTokenHandler(WSGIRequestHandler):
    """Werkzeug's request log without query strings: the token never reaches a log. Malformed
    requests (no path parsed yet) are logged by their request line, cut the same way. A connection
    silent for READ_TIMEOUT seconds is dropped (werkzeug closes it on the socket's timeout), and a
    request whose line and headers have not all arrived HEADER_DEADLINE seconds after it began is
    dropped too (a client sending a byte now and then)."""

    timeout = READ_TIMEOUT

    def handle_one_request(self) -> None:
        watch = getattr(self.server, "watch_headers", None)
        if watch is not None:
            watch(self.connection, True)
        try:
            super().handle_one_request()
        finally:
            if watch is not None:
                watch(self.connection, False)

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # the request line and the headers have arrived
        watch = getattr(self.server, "watch_headers", None)
        if watch is not None:
            watch(self.connection, False)
        return parsed

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
    config.save.mkdir(parents=True, exist_ok=True)  # the app's own files and the runs go here
    view = WorkspaceView(config.workspace, config.save)
    runner = JobRunner(config.save)
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
        by_header = guard.matches(request.headers.get("X-Token")) or guard.matches(
            request.headers.get("X-XSRF-Token"), guard.xsrf
        )
        by_cookie = guard.matches(request.cookies.get(guard.cookie), guard.session)
        if not (by_header or by_cookie):
            abort(403, "this page needs the token printed by tgm.py app: open the URL it printed (…/?token=…)")
        if not by_header and not (request.method in ("GET", "HEAD") and COOKIE_ROUTES.fullmatch(request.path)):
            abort(403, "the cookie fetches pictures only: data and changes need the page's X-XSRF-Token header (or "
                       "X-Token); open the URL tgm.py app printed")  # fmt: skip
        if request.method not in SAFE_METHODS:
            origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
            if (origin is not None and not guard.origin_allowed(origin)) or site not in (None, "same-origin", "none"):
                abort(403, "a change must come from the app's own page (Origin / Sec-Fetch-Site say otherwise)")
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

    def served(path: Path, mimetype: str, **kwargs) -> Response:
        """A file the view found inside its folders, sent from a descriptor opened as a regular file
        (never a link or a FIFO swapped in after the view looked)."""
        try:
            handle = open_regular(path, path.name)
        except NotARegularFileError as exc:
            abort(404, str(exc))
        except PermissionError:
            abort(403, f"{path.name} cannot be read (permission denied); make it readable")
        except OSError:
            abort(404, f"{path.name} was removed while it was being sent; reload")
        return send_file(handle, mimetype=mimetype, **kwargs)

    def png(path: Path) -> Response:
        return served(path, "image/png")

    def download_name(name: str, suffix: str) -> str:
        """A clip's name as a download's file name: letters, digits, '.', '-' and '_' kept."""
        return re.sub(r"[^\w.-]", "_", name, flags=re.ASCII) + suffix

    # --- the page -------------------------------------------------------------------------------

    @app.get("/")
    def index():
        if "token" in request.args:
            if not guard.matches(request.args.get("token")):
                abort(403, "wrong token: open the URL tgm.py app printed")
            # the page key goes into this answer only (the page drops the token from the address bar
            # and keeps the key for its tab); the cookie, sent by the browser to every port of this
            # machine, fetches pictures only
            page = (STATIC / "index.html").read_text().replace(XSRF_PLACEHOLDER, guard.xsrf)
            response = Response(page, mimetype="text/html")
            response.set_cookie(guard.cookie, guard.session, httponly=True, samesite="Strict", path="/")
            return response
        page = (STATIC / "index.html").read_text().replace(XSRF_PLACEHOLDER, "")  # a reload: the tab has its key
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
        box = parse_json(request.form["box"], "box must be JSON: [x0, y0, x1, y1]") if request.form.get("box") else None
        strokes = [request.files[k].read() if k in request.files else b"" for k in ("fg_strokes", "bg_strokes")]
        png_bytes = view.trimap_from_box(name, stem, box, band_argument(), *strokes)
        response = Response(png_bytes, mimetype="image/png")
        warning = view.trimap_warning(png_bytes)
        if warning:
            response.headers["X-Trimap-Warning"] = warning
        return response

    @app.post("/api/clips/<name>/from-person/<stem>")
    def from_person(name: str, stem: str):
        return Response(view.trimap_of_person(name, stem, band_argument()), mimetype="image/png")

    @app.get("/api/clips/<name>/thumb/<stem>")
    def thumbnail(name: str, stem: str):
        return served(view.thumbnail_file(name, stem), "image/jpeg", max_age=3600)

    @app.get("/api/clips/<name>/display/<stem>")
    def display(name: str, stem: str):
        try:
            quality = int(request.args.get("quality", 85))
        except ValueError:
            abort(400, "quality must be a whole number")
        return served(view.display_file(name, stem, quality), "image/jpeg")

    @app.get("/api/clips/<name>/result/<stem>")
    def result_trimap(name: str, stem: str):
        return png(view.result_file(name, stem))

    @app.get("/api/clips/<name>/matte/<stem>")
    def matte(name: str, stem: str):
        return png(view.matte_file(name, stem, request.args.get("kind", "comp")))

    @app.get("/api/clips/<name>/foreground.mov")
    def foreground_video(name: str):
        return served(view.video_file(name), "video/quicktime", as_attachment=True,
                      download_name=download_name(name, "_foreground.mov"))  # fmt: skip

    @app.get("/api/clips/<name>/exr.zip")
    def exr_archive(name: str):
        """The clip's EXR mattes and foregrounds as one zip (stored: EXR compresses its own pixels)."""
        files = view.exr_files(name)
        spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (send_file closes it once sent)
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
            for arcname, path in files:
                try:
                    with open_regular(path, arcname) as source, archive.open(f"{name}_exr/{arcname}", "w") as into:
                        shutil.copyfileobj(source, into, 1 << 20)
                except (NotARegularFileError, OSError):
                    abort(404, f"{arcname} changed while the archive was made; run matting with EXR again")
        spool.seek(0)
        return send_file(spool, mimetype="application/zip", as_attachment=True,
                         download_name=download_name(name, "_exr.zip"))  # fmt: skip

    @app.get("/api/clips/<name>/uncertainty.png")
    def uncertainty_plot(name: str):
        return png(view.uncertainty_file(name))

    # --- run settings ---------------------------------------------------------------------------

    def finetuning_start() -> str | None:
        """What a run's finetuning starts from: "random", "checkpoint", or None (--load: no finetuning).
        Read again each time: the config may be edited while the app runs."""
        if config.load:
            return None
        if config.cfg is None:
            return "random"
        try:
            return "checkpoint" if load_config(config.cfg).TRAIN.LOAD_CKPT else "random"
        except UserError:
            return "checkpoint"  # the run will say what is wrong with the file

    def run_inputs(name: str) -> str:
        """A digest of what a run of the clip reads besides its settings: the config file's text, the
        checkpoint, the clip's keyframe trimaps and frames (sizes and modification times)."""

        def stamp(path: Path | None) -> list:
            try:
                info = path.stat() if path is not None else None
            except OSError:
                return [str(path), None]
            return [str(path), info.st_size, info.st_mtime_ns] if info else [None]

        source = view.clip_dir(name)
        keyframes = view.trimap_dir(name)
        parts = [
            hashlib.sha256(config.cfg.read_bytes()).hexdigest() if config.cfg and config.cfg.is_file() else None,
            stamp(config.load), stamp(source), len(view.stems(name)), list(view.frame_size(name)),
            [stamp(keyframes / f"{k}{TRIMAP_SUFFIX}") for k in view.keyframes(name)],
        ]  # fmt: skip
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def run_stems(name: str) -> list[str]:
        """The frames a run of the clip covers: its saved range, or every frame."""
        stems, frames = view.stems(name), current_settings(name).frames
        if not frames:
            return stems
        first, last = (int(n) for n in frames.split("-"))
        return stems[first : last + 1]

    def proposal(name: str) -> tuple[RunSettings, dict[str, str]]:
        """The settings proposed for the clip on this machine, and what each trades."""
        height, width = view.frame_size(name)
        return recommend(len(view.stems(name)), height, width, machine(), read_tuned(config.save, name),
                         finetuning_start())  # fmt: skip

    def current_settings(name: str) -> RunSettings:
        return settings_store.load(name) or proposal(name)[0]

    def clip_settings(name: str) -> dict:
        proposed, notes = proposal(name)
        saved = settings_store.load(name)
        start = finetuning_start()
        return {"settings": asdict(saved or proposed), "saved": saved is not None, "proposed": asdict(proposed),
                "notes": notes, "trades": TRADES, "flags": workspace_flags(saved or proposed),
                "gpu": machine().gpu, "tuned": read_tuned(config.save, name), "finetuning": start is not None,
                "start": START_NOTES[start]}  # fmt: skip

    def estimate_of(name: str, settings: RunSettings) -> dict | None:
        return read_estimate(estimate_path(config.save / APP_DIR, name, settings, run_inputs(name)), name)

    def held_by_earlier_runs(name: str) -> int:
        """Bytes an earlier run of the clip holds in --save that a rerun reuses or replaces: its result
        folders and its finetuning's run folder."""
        folders = [r.path for r in results_of(config.save, name)] + [config.save / "train_log" / name]
        return sum(p.lstat().st_size for f in folders if f.is_dir() and not f.is_symlink()
                   for p in f.rglob("*") if p.is_file() and not p.is_symlink())  # fmt: skip

    def refuse_without_room(name: str, settings: RunSettings) -> None:
        """A run the estimate says will not fit on the disk of --save does not start (409)."""
        estimate = estimate_of(name, settings)
        if estimate is None:
            return
        needed = estimate["disk_bytes"] - held_by_earlier_runs(name)
        free = shutil.disk_usage(config.save).free
        if needed > free:
            abort(409, f"this run needs about {needed / 2**20:.0f} MiB more on the disk of {config.save} (the "
                       f"estimate, less what its earlier run holds) and {free / 2**20:.0f} MiB are free: free some "
                       "space, or choose discard parts or a smaller internal size")  # fmt: skip

    @app.get("/api/clips/<name>/estimate")
    def get_estimate(name: str):
        view.clip_dir(name)
        settings = current_settings(name)
        estimate = estimate_of(name, settings)
        free = shutil.disk_usage(config.save).free
        return jsonify(estimate=estimate, flags=workspace_flags(settings), free_bytes=free)

    @app.get("/api/clips/<name>/settings")
    def get_settings(name: str):
        return jsonify(clip_settings(name))

    @app.post("/api/clips/<name>/settings")
    def save_settings(name: str):
        view.clip_dir(name)
        try:
            settings = RunSettings.from_json(json_body(), f"settings of {name}")
            machine().check_device(settings.device)
        except UserError as exc:
            abort(400, str(exc))
        height, width = view.frame_size(name)
        if settings.frames and int(settings.frames.split("-")[1]) >= len(view.stems(name)):
            abort(400, f"frames {settings.frames}: {name} has frames 0 to {len(view.stems(name)) - 1}")
        if settings.finetune_crop > min(height, width):
            abort(400, f"finetune_crop {settings.finetune_crop} px is larger than the frames ({width}x{height}): "
                       f"at most {min(height, width)}")  # fmt: skip
        settings_store.save(name, settings)
        return jsonify(clip_settings(name))

    # --- jobs -----------------------------------------------------------------------------------

    @app.get("/api/job")
    def job_state():
        return jsonify(job=runner.current.as_json() if runner.current else None)

    @app.post("/api/job")
    def start_job():
        wanted = 'send {"clip": NAME, "kind": "propagate", "estimate" or "matte"}'
        body = json_body(wanted)
        body = body if isinstance(body, dict) else {}
        name, kind, exr = body.get("clip"), body.get("kind"), body.get("exr")
        if not isinstance(name, str) or kind not in ("propagate", "estimate", "matte"):
            abort(400, wanted)
        if exr is not None and (kind != "matte" or exr not in EXR_COMPRESSIONS):
            abort(400, f'"exr" goes with a matte job: {" or ".join(EXR_COMPRESSIONS)} (the EXR compression)')
        source = view.clip_dir(name)
        view.check_job_paths(name)
        result = view.result(name)
        if kind == "matte" and (result is None or not result.is_fused(run_stems(name))):
            abort(409, f"{name} has no propagated trimaps yet: run propagation first")
        settings = current_settings(name) if kind in ("propagate", "estimate") else None
        if kind == "propagate":
            refuse_without_room(name, settings)
        if kind == "estimate":  # its file's folder, made here and never through a link
            private_subfolder(config.save, APP_DIR, ESTIMATES_DIR)
        inputs = run_inputs(name) if kind == "estimate" else ""
        try:
            job = runner.start(name, kind, commands_for(config, name, kind, result, settings, source, exr, inputs))
        except RuntimeError as exc:
            abort(409, str(exc))
        return jsonify(job=job.as_json()), 202

    @app.post("/api/job/cancel")
    def cancel_job():
        job = runner.cancel()
        return jsonify(job=job.as_json() if job else None)

    return app


class BoundedServer(ThreadedWSGIServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` at once: a connection beyond them takes
    the slot of the one that has been sending its headers longest, or is closed at once when every
    slot holds a whole request (with the handler's read timeout and the headers' deadline, no one
    can hold the server by opening connections and sending little or nothing)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._reading: dict[socket.socket, float] = {}  # connections still sending a request's headers, since
        self._reading_lock = threading.Lock()
        self._closing = threading.Event()
        threading.Thread(target=self._drop_slow_headers, daemon=True, name="header-deadline").start()

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()

    def watch_headers(self, connection: socket.socket, reading: bool) -> None:
        """A handler begins (``reading``) or has finished reading a request's line and headers."""
        with self._reading_lock:
            if reading:
                self._reading[connection] = time.monotonic()
            else:
                self._reading.pop(connection, None)

    def _drop_slow_headers(self) -> None:
        """One thread for every connection: shut those whose headers take longer than HEADER_DEADLINE."""
        while not self._closing.wait(0.25):
            now = time.monotonic()
            with self._reading_lock:
                late = [c for c, began in self._reading.items() if now - began > HEADER_DEADLINE]
                for connection in late:
                    del self._reading[connection]
            for connection in late:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _drop_oldest_unsent(self) -> bool:
        """All slots taken: shut the connection that has been sending its request's headers longest
        (a browser's request arrives whole at once, so the connections that fill the slots with half
        requests are the ones shut, not the page's). False when every slot holds a whole request."""
        with self._reading_lock:
            if not self._reading:
                return False
            oldest = min(self._reading, key=self._reading.get)
            del self._reading[oldest]
        try:
            oldest.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False) and not (
            self._drop_oldest_unsent() and self._slots.acquire(timeout=2)
        ):
            log.warning("%d connections open: one from %s closed unanswered", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def reads_closed_after(app):
    """``app`` whose connection stops reading once the answer is sent: werkzeug then drains what the
    client still sends (it closes every connection after one request), and a client trickling bytes
    would hold the connection's thread for as long as it liked."""

    def answer(environ, start_response):
        body = app(environ, start_response)
        try:
            yield from body
        finally:
            if hasattr(body, "close"):
                body.close()
            connection = environ.get("werkzeug.socket")
            if connection is not None:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    return answer


def make_app_server(config: AppConfig) -> tuple[BaseWSGIServer, Flask]:
    """Listen on ``config.host:config.port`` (port 0: one the system picks), then make the app for
    the port actually bound (it names the cookie and the allowed hosts). OSError if it cannot listen."""
    served: dict[str, Flask] = {}
    server = BoundedServer(config.host, config.port, reads_closed_after(lambda e, s: served["app"](e, s)),
                           QuietTokenHandler)  # fmt: skip
    served["app"] = create_app(dataclasses.replace(config, port=server.server_port))
    return server, served["app"]


def commands_for(
    config: AppConfig,
    clip: str,
    kind: str,
    result: ResultFolder | None = None,
    settings: RunSettings | None = None,
    source: Path | None = None,
    exr: str | None = None,
    inputs: str = "",
) -> list[list[str]]:
    """The commands a job runs: ``tgm.py workspace`` for the clip (finetune unless --load,
    propagate, fuse; reruns redo only what changed) with the clip's run ``settings`` (``estimate``:
    the same with --estimate, which only measures), or ``tgm.py matte`` on its fused trimaps then
    ``tgm.py encode`` of the foregrounds into ``matte/foreground.mov`` (at the rate of the clip's
    ``source`` video when it is one, else 25 fps); with ``exr`` (zip or piz) the matting also writes
    the EXR mattes and foregrounds (the page's other download)."""
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
            command.append(f"--estimate={estimate_path(config.save / APP_DIR, clip, settings, inputs)}")
        return [command + workspace_flags(settings)]
    if result is None:
        raise ValueError(f"matting {clip} needs its result folder")
    if source is not None and source.is_file():
        rate = ["--source", str(source)]
    else:  # frames extracted from a video keep its rate (their source.json); else 25 fps
        rate = ["--fps", f"{(source_fps(source) if source is not None else None) or DEFAULT_FPS:g}"]
    return [[entry, "matte", "--result", str(result.path), "--dataroot", str(config.workspace),
             "--background", config.background, *(["--exr", exr] if exr else [])],
            [entry, "encode", "--images_dir", str(result.matte_dir), "--suffix", FG_SUFFIX,
             "--out", str(result.matte_dir / FOREGROUND_VIDEO), *rate]]  # fmt: skip
