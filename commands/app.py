"""A local web page for the whole loop: paint keyframe trimaps, propagate, review, correct, matte.

usage: tgm.py app --workspace WS [--save results] [--load CKPT | --cfg base.yaml] [--host 127.0.0.1]
              [--port 8765] [--background green]

Prints the page's address with a token for this run (like Jupyter); open it in a browser. On a
remote machine, forward the port first: ssh -L 8765:127.0.0.1:8765 user@machine, then open the
printed address on your computer. Jobs run tgm.py workspace (finetune unless --load, propagate,
fuse; reruns redo only what changed) and tgm.py matte, one at a time. SIGTERM and SIGHUP (an ssh
drop) stop it like Ctrl-C: the running job is cancelled, never left orphaned.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
from pathlib import Path

from utils.errors import UserError
from utils.io import FolderLock, ensure_writable_dir, private_subfolder
from webapp.jobs import APP_DIR
from webapp.server import WILDCARD_HOSTS, AppConfig, make_app_server

NAME = "app"
HELP = "A local web page for the whole loop: paint keyframe trimaps, propagate, review, correct, matte."
log = logging.getLogger("app")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="folder of clips: videos (.mp4 .mov .mkv .avi .m4v .webm) "
                        "and/or clip folders of <stem>_rgb.png frames")  # fmt: skip
    parser.add_argument("--save", default="results", help="where results go (tgm.py workspace --save)")
    parser.add_argument("--load", default=None, help="propagate with this checkpoint (no finetuning)")
    parser.add_argument("--cfg", default=None, help="base yaml for finetuning (without --load)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    parser.add_argument("--background", default="green", help="tgm.py matte --background for the composites")


def guarded_paths(args: argparse.Namespace) -> list:
    return [(Path(args.save), "--save", Path(args.workspace), "--workspace")]


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM, SIGHUP (an ssh drop): stop like Ctrl-C, job included


def run(args: argparse.Namespace) -> None:
    workspace, save = Path(args.workspace), Path(args.save)
    if not workspace.is_dir():
        raise UserError(f"--workspace {workspace} is not a folder; pass the folder holding your videos or clip folders")
    ensure_writable_dir(save, "--save")
    for flag, value in (("--load", args.load), ("--cfg", args.cfg)):
        if value and not Path(value).is_file():
            raise UserError(f"{flag} {value} does not exist")
    if args.host not in LOCAL_HOSTS:
        log.warning(
            "--host %s: the page is reachable from other machines; anyone with the token can paint and run jobs "
            "on this workspace. Prefer 127.0.0.1 and an SSH port forward.", args.host,
        )  # fmt: skip
    load = Path(args.load).resolve() if args.load else None
    cfg = Path(args.cfg).resolve() if args.cfg else None
    app_dir = private_subfolder(save, APP_DIR)  # the app's own files: never through a link planted there
    with FolderLock(app_dir, "app (--save)"):  # one app per save folder
        config = AppConfig(workspace.resolve(), save.resolve(), secrets.token_urlsafe(24), load, cfg, args.background,
                           args.host, args.port)  # fmt: skip
        try:
            server, app = make_app_server(config)
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port") from exc
        # Children must see Ctrl-C (a job's cancel sends it) even if this process was started ignoring it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGHUP, _stop)
        host = "127.0.0.1" if args.host in WILDCARD_HOSTS else f"[{args.host}]" if ":" in args.host else args.host
        print(f"\n    open http://{host}:{server.server_port}/?token={config.token}\n", flush=True)
        log.info("serving %s (results in %s); Ctrl-C stops", workspace, save)
        try:
            server.serve_forever()  # returns on Ctrl-C, SIGTERM and SIGHUP (werkzeug catches the interrupt)
        except KeyboardInterrupt:
            pass
        finally:
            log.info("stopping: the running job (if any) is cancelled first")
            app.extensions["trimap_runner"].stop()
            server.server_close()
