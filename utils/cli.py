"""Command-line flags every command shares: the device, --debug, trailing config overrides, renamed flags."""

from __future__ import annotations

import argparse


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device (auto, cpu, cuda, cuda:N, mps) and the published --gpu N."""
    parser.add_argument("--gpu", type=int, default=None, help="CUDA device index (published flag; = --device cuda:N)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N, mps")


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """--debug: show the traceback of an input error too (the dispatcher adds it to every command)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The trailing KEY VALUE config overrides; call last (REMAINDER takes the rest)."""
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


class DeprecatedFlag(argparse.Action):
    """An old spelling of a renamed flag: still works, and says once what to write instead."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # said once logging is set up (commands.execute logs ``deprecations``)
        notes = getattr(namespace, "deprecations", None) or []
        namespace.deprecations = [*notes, f"{option_string} is deprecated: write {self.new} (same meaning)"]
        setattr(namespace, self.dest, values)


def add_renamed(parser, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as a deprecated spelling of the flag ``new`` (stored in ``dest``)."""
    parser.add_argument(old, dest=dest, action=DeprecatedFlag, new=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)  # fmt: skip
