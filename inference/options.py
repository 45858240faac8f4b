"""How to propagate: the flags of ``test_mf_2.py`` (and the tools that propagate), checked once.

``--mem_every`` enters here and keeps its name: it names the result folder (``<clip>_mem<N>``).
The interval the memory bank really uses is derived from it once per clip, under its own name
(:meth:`PropagationOptions.keep_every`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass

import torch

from dataset.prepare import internal_size
from model.stm import READ_HEADS
from utils.device import device_free_bytes
from utils.errors import UserError
from utils.precision import PRECISIONS

DEFAULT_SHARE_MIB_CPU = 2048
GPU_SHARE_OF_FREE = 0.25  # of the GPU memory free when a run starts: the default query-sharing budget there
# What encoding one query frame takes at its peak in fp32, per pixel of the frame: the trunk's
# largest live activations (stride 2 and 4) and the features kept (skips at stride 4 and 8, key and
# value at 16). Measured as the tensors encode_query makes (bench.memory.TensorPeak): 224 on the
# default path, 330 with --fast (its skip branches at stride 4), 112-175 in bf16;
# tests/test_gpu_path.py keeps this bound above what every path takes.
QUERY_BYTES_PER_PIXEL = 330
MAX_QUERY_BATCH = 8
MAX_IO_THREADS = 16  # readers, and as many writers, by default with a GPU


@dataclass(frozen=True)
class PropagationOptions:
    """How to propagate; the constructor checks every value (UserError).

    mem_every: as given on the command line; 0 means "derive it from max_memory". Names the
        result folder.
    max_memory: bound on the non-keyframe entries a memory read sees, or None.
    n_threads: background threads for reading frames and for writing PNGs, each (0: inline; None:
        the device's default, see :meth:`io_threads`).
    precision: fp32, tf32 (CUDA), bf16 or fp16 (autocast).
    naive / fast: the computation path (see inference.driver.configure_model).
    compile: torch.compile the encoders and the decoder (once per run; shapes are fixed per clip).
    recompute: compute every part, even those an earlier run into the same folder finished with
        the same inputs (by default those are reused).
    share_query_mib: MiB of query features shared between the two parts of a segment (-1: the
        device's default, see :meth:`share_query_bytes`; 0: off; None: not given, the config says).
        It changes no bit of the results, so it is not part of a part's fingerprint.
    max_internal_size: propagate with the frames' shorter side scaled to this (0: the frames' own
        size, the published computation; None: not given, the config says). Part of the fingerprint.
    discard_parts: fuse each frame as soon as every part covering it is done and delete its part
        PNGs (disk for long clips grows with the fused trimaps only; reruns cannot reuse parts).
    query_batch: query frames encoded in one batch (0: the device's choice, see
        :meth:`query_batch_for`). Moves results by rounding at most, so it is not part of a part's
        fingerprint.
    read_heads: the fused memory read's value heads, 1 or 4 (0: the device's default, see
        ``model.stm.fused_value_heads``). Within rounding, so not part of a part's fingerprint.
    """

    mem_every: int = 5
    max_memory: int | None = None
    n_threads: int | None = None
    precision: str = "fp32"
    naive: bool = False
    fast: bool = False
    compile: bool = False
    recompute: bool = False
    share_query_mib: int | None = -1
    max_internal_size: int | None = 0
    discard_parts: bool = False
    query_batch: int = 0
    read_heads: int = 0

    def __post_init__(self) -> None:
        if self.mem_every < 0:
            raise UserError(f"--mem_every {self.mem_every}: must be >= 0 (0 means: derive it from --max_memory)")
        if self.max_memory is not None and self.max_memory < 1:
            raise UserError(f"--max_memory {self.max_memory}: must be >= 1 (or leave it out for no bound)")
        if self.mem_every == 0 and self.max_memory is None:
            raise UserError("--mem_every 0 needs --max_memory M (then every ceil(N / M)-th frame is kept)")
        if self.n_threads is not None and self.n_threads < 0:
            raise UserError(f"--n_threads {self.n_threads}: must be >= 0")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.share_query_mib is not None and self.share_query_mib < -1:
            raise UserError(f"--share_query_mib {self.share_query_mib}: give MiB >= 0 (0: off), or -1 for the default")
        if self.max_internal_size is not None and self.max_internal_size != 0 and self.max_internal_size < 32:
            raise UserError(
                f"--max_internal_size {self.max_internal_size}: give the shorter side in pixels, at least 32 "
                "(e.g. 480 or 720), or 0 for the frames' own size"
            )
        if self.query_batch < 0:
            raise UserError(f"--query_batch {self.query_batch}: give frames >= 1, or 0 for the device's choice")
        if self.read_heads not in (0, *READ_HEADS):
            raise UserError(
                f"--read_heads {self.read_heads}: give {' or '.join(map(str, READ_HEADS))}, "
                "or 0 for the device's default"
            )
        if self.naive and (self.fast or self.compile):
            raise UserError("--naive is the published computation as it was: it takes neither --fast nor --compile")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PropagationOptions:
        """The options from the flags of :func:`add_propagation_arguments`."""
        return cls(
            mem_every=args.mem_every, max_memory=args.max_memory, n_threads=args.n_threads,
            precision=args.precision, naive=args.naive, fast=args.fast, compile=args.compile, recompute=args.recompute,
            share_query_mib=args.share_query_mib, max_internal_size=args.max_internal_size,
            discard_parts=args.discard_parts, query_batch=args.query_batch, read_heads=args.read_heads,
        )  # fmt: skip

    def with_config(self, system) -> PropagationOptions:
        """The options with what the config's SYSTEM node says where no flag did (SHARE_QUERY_MIB,
        MAX_INTERNAL_SIZE)."""
        given = {}
        if self.share_query_mib is None:
            given["share_query_mib"] = int(system.SHARE_QUERY_MIB)
        if self.max_internal_size is None:
            given["max_internal_size"] = int(system.MAX_INTERNAL_SIZE)
        return dataclasses.replace(self, **given) if given else self

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size frames of ``height`` x ``width`` are propagated at (see dataset.prepare.internal_size)."""
        return internal_size(height, width, self.max_internal_size or 0)

    def share_query_bytes(self, device: torch.device) -> int:
        """The query-sharing budget in bytes: the given MiB, or by default a quarter of the memory
        this process may still take on a GPU when asked (``utils.device.device_free_bytes``: the
        card's free memory within any per-process cap) and 2 GiB elsewhere; none on the naive path
        (the published computation as it was)."""
        if self.naive:
            return 0
        mib = -1 if self.share_query_mib is None else self.share_query_mib
        if mib >= 0:
            return mib * 2**20
        free = device_free_bytes(device)
        return int(free * GPU_SHARE_OF_FREE) if free is not None else DEFAULT_SHARE_MIB_CPU * 2**20

    def io_threads(self, device: torch.device) -> int:
        """Threads reading frames ahead, and threads encoding and writing PNGs: ``n_threads`` when
        given, else 1 on the CPU (the network needs its cores) and with a GPU one per core this
        process may run on (at most MAX_IO_THREADS), where decoding frames and encoding PNGs
        (OpenCV, without the GIL) must keep up with the device."""
        if self.n_threads is not None:
            return self.n_threads
        return 1 if device.type == "cpu" else min(MAX_IO_THREADS, len(os.sched_getaffinity(0)))

    def query_batch_for(self, device: torch.device, height: int, width: int) -> int:
        """Query frames of ``height`` x ``width`` (the working size) encoded in one batch:
        ``query_batch`` when given; by default 1 on the CPU (no gain there: each frame already
        fills the cores) and on a GPU as many as a tenth of its free memory holds at
        QUERY_BYTES_PER_PIXEL (at 1088x1920: 3 with 20 GiB free, 8 with 130 GiB free), at most
        MAX_QUERY_BATCH; always 1 on the naive path (the published computation) and with
        ``compile`` (its encoders are compiled for one shape: a part's last batch and frames the
        query cache holds would make other sizes, each a new compile)."""
        if self.naive or self.compile:  # the published path; compiled encoders take one batch size
            return 1
        if self.query_batch:
            return self.query_batch
        free = device_free_bytes(device)
        if free is None:
            return 1
        return max(1, min(MAX_QUERY_BATCH, int(free * 0.1) // (QUERY_BYTES_PER_PIXEL * height * width)))

    def keep_every(self, num_frames: int) -> int:
        """The memory interval for a clip of ``num_frames`` frames: ``mem_every`` when given,
        else ``ceil(N / max_memory)`` (docs/method.md, "The memory rules")."""
        if self.mem_every > 0:
            return self.mem_every
        return max(1, math.ceil(num_frames / self.max_memory))

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.fast else torch.contiguous_format


def add_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    """The memory schedule and the computation path of a propagation."""
    parser.add_argument(
        "--mem_every", type=int, default=5, help="keep every N-th frame in memory (0: from --max_memory)"
    )
    parser.add_argument("--max_memory", type=int, default=None, help="at most M non-keyframe entries in memory")
    parser.add_argument(
        "--n_threads", type=int, default=None, help="background threads reading frames, and as many writing PNGs "
        "(default: 1 on the CPU, with a GPU one per core up to 16; 0: inline)",
    )  # fmt: skip
    parser.add_argument(
        "--recompute", action="store_true", help="compute every part; by default a rerun into the same --save "
        "reuses the parts whose inputs (frames, keyframe trimaps, weights, options) did not change",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=tuple(PRECISIONS), default="fp32", help="fp32 (default, matches the published numbers), "
        "tf32 (fp32 tensors, TF32 tensor cores: NVIDIA Ampere and later), bf16 or fp16 (autocast: faster on GPUs "
        "and on CPUs with AMX/AVX512-BF16)",
    )  # fmt: skip
    parser.add_argument(
        "--share_query_mib", type=int, default=None, help="MiB of query features the forward and backward parts "
        "of a segment share (the same results, less work; default: SYSTEM.SHARE_QUERY_MIB, -1 = 2048 on the CPU, "
        "a quarter of the free memory on a GPU; 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--max_internal_size", type=int, default=None, help="propagate with the frames' shorter side scaled to this "
        "many pixels, the trimaps scaled back (for HD: 480 or 720, see docs/video-and-hd.md; "
        "default SYSTEM.MAX_INTERNAL_SIZE, 0 = the frames' own size, the published computation)",
    )  # fmt: skip
    parser.add_argument(
        "--discard_parts", action="store_true", help="fuse each frame as soon as its parts are done and delete "
        "their probability PNGs: disk grows with the fused trimaps only (for long clips; no part reuse on reruns)",
    )  # fmt: skip
    parser.add_argument(
        "--query_batch", type=int, default=0, help="query frames encoded in one batch (they do not depend on the "
        "memory; within rounding of one at a time). 0: 1 on the CPU, from the free memory on a GPU (at most 8); "
        "always 1 with --naive or --compile",
    )  # fmt: skip
    parser.add_argument(
        "--read_heads", type=int, default=0, choices=(0, *READ_HEADS), help="value heads of the fused memory read "
        "(1 or 4 of 128: within rounding of each other; 4 lets CUDA use its flash and cuDNN kernels). 0: the "
        "device's default (4 on the CPU, 1 on CUDA)",
    )  # fmt: skip
    path = parser.add_mutually_exclusive_group()
    path.add_argument(
        "--fast", action="store_true", help="batch norm folded into the convolutions, channels_last tensors and "
        "decoder skips shared by both objects: less work, results move slightly from the published numbers",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the encoders and the decoder (compiles once per run, "
        "which pays on long clips only; tgm.py tune measures whether it pays here, docs/performance.md)",
    )  # fmt: skip
    path.add_argument(
        "--naive", action="store_true", help="the published computation as it was (affinity always "
        "materialised, per-object decoder): the baseline; memory grows with T",
    )  # fmt: skip
