"""The web app: a page to paint keyframe trimaps, run propagation and matting, and review the result.

Security: every request needs the run's token (``?token=`` once, which sets a cookie; or the
``X-Token`` header). Files are only reached through clip and frame names that exist in the
workspace (a request names a clip and a stem, never a path), and only inside the workspace and
the save folder. Uploads are limited in size and decoded as images, never stored as sent.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from flask import Flask, Response, abort, jsonify, redirect, request, send_file
from werkzeug.exceptions import HTTPException

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX, stems_with
from dataset.trimap import encode_labels, mask_to_trimap, snap_trimap
from dataset.trimap_tools import BACKUP_SUFFIX
from inference.layout import ResultFolder
from inference.uncertainty import read_uncertainty
from matting.sequence import COMPOSITE_SUFFIX, FG_SUFFIX
from utils.io import atomic_write_bytes, atomic_write_png, encode_png
from webapp.jobs import JobRunner

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_COOKIE = "trimap_token"
MAX_UPLOAD_BYTES = 32 * 2**20
MEM_EVERY = 5  # the result folder the app reads: <clip>_mem5, what run_workspace.py writes by default
MATTE_KINDS = {"alpha": ALPHA_SUFFIX, "fg": FG_SUFFIX, "comp": COMPOSITE_SUFFIX}


@dataclass(frozen=True)
class AppConfig:
    """What app.py was started with."""

    workspace: Path
    save: Path
    token: str
    load: Path | None = None
    cfg: Path | None = None
    background: str = "green"


def create_app(config: AppConfig) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    runner = JobRunner(config.save / ".app")
    app.extensions["trimap_runner"] = runner

    @app.before_request
    def require_token():
        given = request.args.get("token") or request.headers.get("X-Token") or request.cookies.get(TOKEN_COOKIE)
        if not given or not hmac.compare_digest(given, config.token):
            abort(403, "this page needs the token printed by app.py: open the URL it printed (…/?token=…)")

    @app.after_request
    def remember_token(response: Response) -> Response:
        if request.args.get("token"):
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="Strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return jsonify(error=f"upload too large: at most {MAX_UPLOAD_BYTES // 2**20} MiB"), 413
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("request %s %s failed", request.method, request.path)
        return jsonify(error=f"the server failed on this request ({type(exc).__name__}); see its log"), 500

    # --- the page -------------------------------------------------------------------------------

    @app.get("/")
    def index():
        if request.args.get("token"):  # the cookie is set; drop the token from the address bar
            response = redirect("/")
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="Strict")
            return response
        return send_file(STATIC / "index.html")

    @app.get("/static/<name>")
    def static_file(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            abort(404, f"no static file {name}")
        return send_file(files[name])

    # --- clips ----------------------------------------------------------------------------------

    def clips() -> dict[str, Path]:
        return {
            p.name: p
            for p in sorted(config.workspace.iterdir())
            if p.is_dir() and not p.name.startswith(".") and stems_with(p, FRAME_SUFFIX)
        }

    def clip_dir(name: str) -> Path:
        found = clips().get(name)
        if found is None:
            abort(404, f"no clip {name!r} in the workspace")
        return found

    def frame_stem(folder: Path, stem: str) -> str:
        if stem not in stems_with(folder, FRAME_SUFFIX):
            abort(404, f"clip {folder.name} has no frame {stem!r}")
        return stem

    def result_of(name: str) -> ResultFolder:
        return ResultFolder.of(config.save, name, MEM_EVERY)

    @app.get("/api/clips")
    def list_clips():
        return jsonify(
            clips=[
                {"name": name, "frames": len(stems_with(folder, FRAME_SUFFIX)),
                 "keyframes": len(stems_with(folder, TRIMAP_SUFFIX)), "propagated": result_of(name).is_finished()}
                for name, folder in clips().items()
            ],
            load=str(config.load) if config.load else None,
        )  # fmt: skip

    @app.get("/api/clips/<name>")
    def clip_detail(name: str):
        folder = clip_dir(name)
        stems = stems_with(folder, FRAME_SUFFIX)
        height, width = cv2.imread(str(folder / f"{stems[0]}{FRAME_SUFFIX}"), cv2.IMREAD_UNCHANGED).shape[:2]
        result = result_of(name)
        uncertainty = read_uncertainty(result) if result.uncertainty_json.exists() else None
        fused = result.ensemble_stems() if result.is_finished() else []
        matted = stems_with(result.matte_dir, COMPOSITE_SUFFIX)
        return jsonify(
            name=name, stems=stems, height=height, width=width, keyframes=stems_with(folder, TRIMAP_SUFFIX),
            result={"fused": fused, "uncertainty": uncertainty, "matted": matted},
        )  # fmt: skip

    @app.get("/api/clips/<name>/frame/<stem>")
    def frame(name: str, stem: str):
        folder = clip_dir(name)
        return send_file(folder / f"{frame_stem(folder, stem)}{FRAME_SUFFIX}", mimetype="image/png")

    @app.get("/api/clips/<name>/keyframe/<stem>")
    def keyframe(name: str, stem: str):
        folder = clip_dir(name)
        path = folder / f"{frame_stem(folder, stem)}{TRIMAP_SUFFIX}"
        if not path.exists():
            abort(404, f"frame {stem} of {name} has no keyframe trimap yet")
        return send_file(path, mimetype="image/png")

    def upload_for_frame(name: str, stem: str, field: str) -> tuple[Path, str, np.ndarray]:
        """The clip folder, the frame's stem and the uploaded grey image ``field``, which must have
        the frame's size."""
        folder = clip_dir(name)
        stem = frame_stem(folder, stem)
        grey = decode_upload(field)
        height, width = cv2.imread(str(folder / f"{stem}{FRAME_SUFFIX}"), cv2.IMREAD_UNCHANGED).shape[:2]
        if grey.shape != (height, width):
            abort(400, f"the {field} is {grey.shape[1]}x{grey.shape[0]} but frame {stem} is {width}x{height}")
        return folder, stem, grey

    @app.put("/api/clips/<name>/keyframe/<stem>")
    def save_keyframe(name: str, stem: str):
        folder, stem, grey = upload_for_frame(name, stem, "trimap")
        labels = snap_trimap(grey)
        path = folder / f"{stem}{TRIMAP_SUFFIX}"
        backup = path.with_name(path.name[: -len(".png")] + BACKUP_SUFFIX)
        if path.exists() and not backup.exists():
            atomic_write_bytes(backup, path.read_bytes())  # the trimap as it was, the first time it is replaced
        atomic_write_png(path, encode_labels(labels))
        counts = [int((labels == c).sum()) for c in range(3)]
        log.info("saved %s (background %d, unknown %d, foreground %d px)", path, *counts)
        return jsonify(saved=f"{name}/{path.name}", backup=backup.name if backup.exists() else None, pixels=counts)

    @app.post("/api/clips/<name>/from-mask/<stem>")
    def from_mask(name: str, stem: str):
        _, stem, grey = upload_for_frame(name, stem, "mask")
        try:
            band = int(request.form.get("width", request.args.get("width", 10)))
        except ValueError:
            abort(400, "width must be a whole number of pixels")
        if not 0 <= band <= 500:
            abort(400, "width must be between 0 and 500 pixels")
        mask = grey >= 1 if grey.max() <= 1 else grey > 127
        trimap = encode_labels(mask_to_trimap(mask, band, band))
        return Response(encode_png(trimap), mimetype="image/png")

    def decode_upload(field: str) -> np.ndarray:
        """The uploaded image (a form file ``field``, or the raw body) as grey uint8."""
        data = request.files[field].read() if field in request.files else request.get_data()
        if not data:
            abort(400, f"no {field} image in the request")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            abort(400, f"the {field} is not an image OpenCV can decode (send a PNG)")
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        if image.ndim == 3:
            image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
        return image

    @app.get("/api/clips/<name>/result/<stem>")
    def result_trimap(name: str, stem: str):
        folder = clip_dir(name)
        path = result_of(name).ensemble_png(frame_stem(folder, stem))
        if not path.exists():
            abort(404, f"frame {stem} of {name} has no propagated trimap yet: run propagation")
        return send_file(path, mimetype="image/png")

    @app.get("/api/clips/<name>/matte/<stem>")
    def matte(name: str, stem: str):
        folder = clip_dir(name)
        kind = request.args.get("kind", "comp")
        if kind not in MATTE_KINDS:
            abort(400, f"kind must be one of {', '.join(MATTE_KINDS)}")
        path = result_of(name).matte_dir / f"{frame_stem(folder, stem)}{MATTE_KINDS[kind]}"
        if not path.exists():
            abort(404, f"frame {stem} of {name} is not matted yet: run matting")
        return send_file(path, mimetype="image/png")

    @app.get("/api/clips/<name>/uncertainty.png")
    def uncertainty_plot(name: str):
        clip_dir(name)
        path = result_of(name).uncertainty_png
        if not path.exists():
            abort(404, "no uncertainty yet: run propagation")
        return send_file(path, mimetype="image/png")

    # --- jobs -----------------------------------------------------------------------------------

    @app.get("/api/job")
    def job_state():
        return jsonify(job=runner.current.as_json() if runner.current else None)

    @app.post("/api/job")
    def start_job():
        body = request.get_json(silent=True) or {}
        name, kind = body.get("clip"), body.get("kind")
        if not isinstance(name, str) or kind not in ("propagate", "matte"):
            abort(400, 'send {"clip": NAME, "kind": "propagate" or "matte"}')
        clip_dir(name)
        if kind == "matte" and not result_of(name).is_fused(stems_with(clip_dir(name), FRAME_SUFFIX)):
            abort(409, f"{name} has no propagated trimaps yet: run propagation first")
        try:
            job = runner.start(name, kind, commands_for(config, name, kind))
        except RuntimeError as exc:
            abort(409, str(exc))
        return jsonify(job=job.as_json()), 202

    @app.post("/api/job/cancel")
    def cancel_job():
        job = runner.cancel()
        return jsonify(job=job.as_json() if job else None)

    return app


def commands_for(config: AppConfig, clip: str, kind: str) -> list[list[str]]:
    """The scripts a job runs: run_workspace.py for the clip (finetune unless --load, propagate,
    fuse; reruns redo only what changed), or matte.py on its fused trimaps."""
    repo = Path(__file__).resolve().parents[1]
    if kind == "propagate":
        command = [str(repo / "run_workspace.py"), "--workspace", str(config.workspace), "--save", str(config.save),
                   "--clips", clip]  # fmt: skip
        if config.load:
            command += ["--load", str(config.load)]
        elif config.cfg:
            command += ["--cfg", str(config.cfg)]
        return [command]
    result = ResultFolder.of(config.save, clip, MEM_EVERY)
    return [[str(repo / "matte.py"), "--result", str(result.path), "--dataroot", str(config.workspace),
             "--background", config.background]]  # fmt: skip
