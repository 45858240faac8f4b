"""Command-line flags the scripts share."""

from __future__ import annotations

import argparse

from utils.errors import UserError
from utils.inference import PropagationOptions, check_memory_options
from utils.precision import PRECISIONS


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device (auto, cpu, cuda, cuda:N, mps) and the published --gpu N."""
    parser.add_argument("--gpu", type=int, default=None, help="CUDA device index (published flag; = --device cuda:N)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N, mps")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--debug and the trailing KEY VALUE config overrides; call last (REMAINDER takes the rest)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def add_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    """The memory schedule and the computation path of a propagation."""
    parser.add_argument(
        "--mem_every", type=int, default=5, help="keep every N-th frame in memory (0: from --max_memory)"
    )
    parser.add_argument("--max_memory", type=int, default=None, help="at most M non-keyframe entries in memory")
    parser.add_argument("--n_threads", type=int, default=1, help="background threads reading frames / writing PNGs")
    parser.add_argument(
        "--precision", choices=tuple(PRECISIONS), default="fp32", help="fp32 (default, matches the published numbers), "
        "bf16 or fp16 (autocast: faster on GPUs and on CPUs with AMX/AVX512-BF16)",
    )  # fmt: skip
    path = parser.add_mutually_exclusive_group()
    path.add_argument(
        "--fast", action="store_true", help="channels_last tensors: faster convolutions (1.6x the naive path on a "
        "2-core CPU, see README), results move slightly from the published numbers",
    )  # fmt: skip
    path.add_argument(
        "--naive", action="store_true", help="the published computation as it was (affinity always "
        "materialised, per-object decoder): the baseline; memory grows with T",
    )  # fmt: skip


def propagation_options(args: argparse.Namespace, dilation: int = 0) -> PropagationOptions:
    """PropagationOptions from the flags of add_propagation_arguments, checked (UserError)."""
    check_memory_options(args.mem_every, args.max_memory)
    if args.n_threads < 0:
        raise UserError(f"--n_threads {args.n_threads}: must be >= 0")
    return PropagationOptions(
        mem_every=args.mem_every, max_memory=args.max_memory, n_threads=args.n_threads, dilation=dilation,
        precision=args.precision, naive=args.naive, fast=args.fast,
    )  # fmt: skip
