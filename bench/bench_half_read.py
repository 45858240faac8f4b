#!/usr/bin/env python3
"""What the memory read costs in half precision: under bf16 / fp16 autocast the read runs in fp32
unless it follows autocast (``STM.read_follows_autocast``, set on CUDA); this propagates a clip
both ways, the fused read in fp32 and the fused read in the autocast dtype (torch's fused
attention on half-precision keys, values and query), and compares the labels of the part PNGs.

usage:
  python -m bench.bench_half_read --clip CLIP_FOLDER --load CKPT [--precisions bf16,fp16] [--fast]

The rule the read's default follows: it may run in half precision only where that moves at most
0.1% of the labels against the fp32 read under the same autocast. Every read takes the fused path here
(the budget set to 0), so both runs differ in the read's precision alone.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

import model.stm as stm
from bench.bench_whole import agreement, part_pngs
from dataset.clip import scan_clip
from inference.driver import configure_model, propagate_clip
from inference.options import PropagationOptions
from model.checkpoint import load_checkpoint
from utils.device import prepare_device, resolve_device
from utils.precision import PRECISIONS


def half_read(dtype: torch.dtype):
    """A bounded read that always takes the fused read, in ``dtype``."""

    def read(memory, query_key, query_value, budget_bytes=0, follow_autocast=False, value_heads=None):
        return stm.read_memory_fused(memory, query_key, query_value, value_heads, dtype)

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True, help="a clip folder with keyframe trimaps")
    parser.add_argument("--load", required=True, help="the checkpoint (e.g. the demo's finetuned one)")
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    prepare_device(device)
    base = stm.STM()
    load_checkpoint(base, args.load)
    clip = scan_clip(Path(args.clip))
    print(f"# the read in half precision: {clip.path} ({len(clip)} frames), {args.load}, {device}"
          f"{', --fast' if args.fast else ''}")  # fmt: skip
    print("| autocast | read | labels vs the fp32 read | max diff /255 | verdict (<= 0.1% of labels moved) |")
    print("|---|---|---|---|---|")
    bounded = stm.read_memory_bounded
    with tempfile.TemporaryDirectory(prefix="bench-half-read-") as tmp:
        for precision in args.precisions.split(","):
            options = PropagationOptions(mem_every=5, precision=precision, fast=args.fast)
            runs = {}
            for read_name, read in (("fp32", half_read(torch.float32)), (precision, half_read(PRECISIONS[precision]))):
                stm.read_memory_bounded = read
                try:
                    model = configure_model(copy.deepcopy(base), options, device)
                    save = Path(tmp) / f"{precision}-{read_name}"
                    propagate_clip(model, clip, save, options, device)
                finally:
                    stm.read_memory_bounded = bounded
                runs[read_name] = part_pngs(save)
            agree, diff = agreement(runs[precision], runs["fp32"])
            verdict = "may run in half precision" if 1 - agree <= 0.001 else "keep the read in fp32"
            print(f"| {precision} | {precision} | {agree:.4%} | {diff} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
