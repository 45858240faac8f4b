#!/usr/bin/env python3
"""Seconds per frame of tgm.py matte (closed-form matting, foreground estimation, PNG writing) with 1
and more workers, and the alpha error, on a generated clip with ground-truth trimaps.

usage: python -m bench.bench_matting [--size 480x864] [--frames 8] [--workers 1,2] [--method cf]

The ground-truth trimaps (0 < alpha < 1 widened with a 9-px kernel, as in the demo) are matted; one
frame is matted first so that numba's compilation is not timed. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from bench.roofline import cpu_info
from dataset.clip import TRIMAP_SUFFIX, scan_clip
from dataset.synthetic import make_synthetic_clip
from evaluation.folders import evaluate_alpha_folders
from matting.sequence import MatteFrame, MatteSettings, matte_clip
from matting.solve import METHODS, Solver
from utils.logs import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--method", choices=METHODS, default="cf")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    height, width = (int(x) for x in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_matting_") as tmp:
        work = Path(tmp)
        sample = make_synthetic_clip(work / "ws", "clip", args.frames, (height, width), keyframes=(0,), seed=3,
                                     unknown_width=9, gt_root=work / "gt")  # fmt: skip
        clip = scan_clip(sample.folder)
        items = [
            MatteFrame(s, t, clip.frame_path(t), sample.gt_folder / f"{s}{TRIMAP_SUFFIX}")
            for t, s in enumerate(clip.stems)
        ]
        matte_clip(items[:1], MatteSettings(work / "warmup", Solver(args.method)))  # numba compiles here
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            out = work / f"out{workers}"
            start = time.perf_counter()
            report = matte_clip(items, MatteSettings(out, Solver(args.method)), workers=workers)
            seconds = time.perf_counter() - start
            scores = evaluate_alpha_folders(out, sample.gt_folder, width=9)
            rows.append({"workers": workers, "frames": len(report.done), "seconds_per_frame": seconds / len(items),
                         "mSAD_unknown": scores.unknown["mSAD"], "MSE_unknown": scores.unknown["MSE"]})  # fmt: skip
    machine = cpu_info()
    print(
        f"\n{machine['cpu']}, {machine['logical_cpus']} CPUs; {args.frames} frames of {width}x{height}, {args.method}"
    )
    print(f"{'workers':>8}{'s/frame':>9}{'mSAD x1e3':>11}{'MSE x1e3':>10}")
    for r in rows:
        print(f"{r['workers']:>8}{r['seconds_per_frame']:>9.2f}{r['mSAD_unknown']:>11.2f}{r['MSE_unknown']:>10.2f}")
    for r in rows:
        print(json.dumps({**r, "size": args.size, "method": args.method, "cpu": machine["cpu"]}))


if __name__ == "__main__":
    main()
