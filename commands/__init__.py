"""The one command line over the library: ``python tgm.py COMMAND [flags]``.

Each command is a small module here with ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args)``; it may also name ``guarded_paths(args)``: (output, its flag, input, its flag)
pairs, refused when an output lies inside an input. The dispatcher (``main``) owns what every
command shares, once: ``--debug``, logging, the "output inside input" check and the error
handling (a UserError is one paragraph and exit 2; Ctrl-C exits 130). The published scripts
(``test_mf_2.py``, ``online_finetune_test.py``, ``ensemble.py``) and ``demo.py`` are shims that
call ``run_command`` with their own module, so they keep their exact flags.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from utils.cli import add_debug_argument
from utils.errors import run_cli
from utils.io import refuse_inside
from utils.logs import setup_logging

# name -> module, in the order `tgm.py --help` lists them; imported only when run (torch is slow to load)
COMMANDS = {
    "extract": "commands.extract",
    "trimap": "commands.trimap",
    "finetune": "commands.finetune",
    "propagate": "commands.propagate",
    "ensemble": "commands.ensemble",
    "workspace": "commands.workspace",
    "tune": "commands.tune",
    "matte": "commands.matte",
    "evaluate": "commands.evaluate",
    "overlay": "commands.overlay",
    "encode": "commands.encode",
    "app": "commands.app",
    "import-vm108": "commands.import_vm108",
    "demo": "commands.demo",
}
SUMMARIES = {
    "extract": "video file -> clip folder of <index>_rgb.png",
    "trimap": "keyframe trimaps from a box, masks, mattes or people; check hand-drawn ones",
    "finetune": "finetune on a clip's keyframes (= online_finetune_test.py)",
    "propagate": "propagate keyframe trimaps to every frame (= test_mf_2.py)",
    "ensemble": "fuse the parts into one trimap per frame (= ensemble.py)",
    "workspace": "finetune, propagate and fuse every clip of a workspace; resumable",
    "tune": "the fastest path with labels within 99.9% of fp32's, measured on a clip's own frames",
    "matte": "alpha mattes, foregrounds and composites from trimaps",
    "evaluate": "score trimaps or alpha mattes against the ground truth",
    "overlay": "fused trimaps over their frames, as a video",
    "encode": "a PNG sequence (e.g. composites) as a video",
    "app": "the local web page for the whole loop",
    "import-vm108": "VideoMatting108 -> clip folders, keyframes and ground truth",
    "demo": "the whole method on a generated clip (= demo.py)",
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def command_parser(module: ModuleType, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command: its own flags and the shared --debug."""
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    add_debug_argument(parser)
    module.add_arguments(parser)
    return parser


def execute(module: ModuleType, args: argparse.Namespace) -> None:
    """Run a parsed command: logging, the output-inside-input guards, then ``run``."""
    setup_logging()
    for note in getattr(args, "deprecations", None) or []:
        logging.getLogger("cli").warning("%s", note)
    for output, output_flag, source, source_flag in getattr(module, "guarded_paths", lambda _: [])(args):
        if output is not None and source is not None:
            refuse_inside(output, output_flag, source, source_flag)
    module.run(args)


def run_command(module: ModuleType, argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` for ``module`` and run it; for the shims' ``main``."""
    execute(module, command_parser(module, prog).parse_args(None if argv is None else list(argv)))


def main(argv: Sequence[str] | None = None) -> None:
    """``tgm.py COMMAND ...``: pick the command, then parse and run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    program = program_name()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
        text = (
            f"usage: {program} COMMAND [flags]   ({program} COMMAND --help for its flags)\n\ncommands:\n"
            + "\n".join(lines)
        )
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{program}: no command {argv[0]!r}\n\n{text}", file=sys.stderr)
            sys.exit(2)
        print(text)
        return
    run_command(command_module(argv[0]), argv[1:], prog=f"{program} {argv[0]}")


def program_name() -> str:
    """How the user called us: ``tgm`` (the installed command) or ``tgm.py`` (the checkout's script)."""
    return "tgm" if Path(sys.argv[0]).name == "tgm" else "tgm.py"


def cli(argv: Sequence[str] | None = None) -> None:
    """The console entry: ``main`` under ``run_cli`` (UserError -> exit 2, Ctrl-C -> 130)."""
    run_cli(lambda: main(argv))
