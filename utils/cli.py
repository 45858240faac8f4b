"""Command-line flags every script shares: the device, --debug and trailing config overrides."""

from __future__ import annotations

import argparse


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device (auto, cpu, cuda, cuda:N, mps) and the published --gpu N."""
    parser.add_argument("--gpu", type=int, default=None, help="CUDA device index (published flag; = --device cuda:N)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N, mps")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--debug and the trailing KEY VALUE config overrides; call last (REMAINDER takes the rest)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
