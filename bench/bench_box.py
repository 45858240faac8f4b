#!/usr/bin/env python3
"""What a box buys: trimaps from a box (GrabCut + the band of from-mask) against the true trimaps.

usage: python -m bench.bench_box [--clips 4] [--frames 16] [--every 3] [--size 360x640] [--bands 6,12,18]

On generated clips with ground truth (dataset/synthetic.py; true trimaps with a --gt_band px
band), for every --every-th frame: the box is the true mask's bounding box (alpha > 0.5) padded by
--pad px. Printed, as the mean over the frames: the mIoU against the true trimap of
- the rectangle as unknown (inside the box unknown, outside background): the baseline;
- from-box: GrabCut from the box alone;
- after one round of strokes: a stroke of the right class (a disc in the largest wrong region,
  where it is deepest) added and GrabCut run again, as a user would correct it;
and the seconds from-box takes on a 1088x1920 frame (median of --runs). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.roofline import cpu_info
from dataset.clip import TRIMAP_SUFFIX
from dataset.segment import Box, box_trimap, grabcut_mask
from dataset.synthetic import make_synthetic_clip, render_frames
from dataset.trimap import BACKGROUND, UNKNOWN
from evaluation.folders import read_labels
from evaluation.metrics import confusion, iou_from_confusion
from utils.images import read_alpha, read_rgb


def miou(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(iou_from_confusion(confusion(pred, truth)).mean())


def padded_box(mask: np.ndarray, pad: int) -> Box:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return Box.clipped(xs.min() - pad, ys.min() - pad, xs.max() + 1 + pad, ys.max() + 1 + pad, width, height)


def rectangle_trimap(shape: tuple[int, int], box: Box) -> np.ndarray:
    labels = np.full(shape, BACKGROUND, np.uint8)
    labels[box.y0 : box.y1, box.x0 : box.x1] = UNKNOWN
    return labels


def corrective_stroke(predicted: np.ndarray, truth: np.ndarray, radius: int = 6) -> tuple[np.ndarray, bool]:
    """A disc stroke in the largest region where the predicted mask is wrong, where it is deepest:
    (H x W bool stroke, True if it marks foreground)."""
    wrong = (predicted != truth).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(wrong)
    stroke = np.zeros(truth.shape, bool)
    if count <= 1:
        return stroke, True
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (components == largest).astype(np.uint8)
    depth = cv2.distanceTransform(region, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    cv2.circle(stroke.view(np.uint8), (int(x), int(y)), max(1, min(radius, int(depth[y, x]))), 1, -1)
    stroke &= region.astype(bool)
    return stroke, bool(truth[y, x])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--size", default="360x640", help="HxW of the generated clips")
    parser.add_argument("--gt_band", type=int, default=12, help="band diameter of the true trimaps")
    parser.add_argument("--bands", default="6,12,18", help="from-box's bands per side to try (the app's slider)")
    parser.add_argument("--pad", type=int, default=5, help="pixels around the true mask's bounding box")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    height, width = map(int, args.size.split("x"))
    bands = [int(b) for b in args.bands.split(",")]
    scores = {"rectangle as unknown": []}
    for band in bands:
        scores[f"from-box, band {band}"] = []
        scores[f"from-box + 1 stroke, band {band}"] = []
    with tempfile.TemporaryDirectory(prefix="bench-box-") as tmp:
        for seed in range(args.clips):
            sample = make_synthetic_clip(Path(tmp) / f"ws{seed}", "clip", args.frames, (height, width), keyframes=(0,),
                                         seed=10 + seed, unknown_width=args.gt_band)  # fmt: skip
            for t in range(0, args.frames, args.every):
                stem = f"{t:05d}"
                rgb = read_rgb(sample.folder / f"{stem}_rgb.png")
                truth = read_labels(sample.gt_folder / f"{stem}{TRIMAP_SUFFIX}")
                mask = read_alpha(sample.gt_folder / f"{stem}_alpha.png") > 0.5
                box = padded_box(mask, args.pad)
                scores["rectangle as unknown"].append(miou(rectangle_trimap(mask.shape, box), truth))
                stroke, is_fg = corrective_stroke(grabcut_mask(rgb, box), mask)
                fg, bg = (stroke, None) if is_fg else (None, stroke)
                for band in bands:
                    scores[f"from-box, band {band}"].append(miou(box_trimap(rgb, box, band), truth))
                    scores[f"from-box + 1 stroke, band {band}"].append(miou(box_trimap(rgb, box, band, fg, bg), truth))
    frames, _ = render_frames(1, 1088, 1920, seed=3)
    hd_box = Box(500, 200, 1500, 1000)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        box_trimap(frames[0], hd_box, bands[0])
        times.append(time.perf_counter() - start)
    machine = cpu_info()
    count = len(scores["rectangle as unknown"])
    print(f"\n{machine['cpu']}, {machine['logical_cpus']} CPUs; {count} frames of {args.clips} generated {args.size} "
          f"clips, true trimaps with a {args.gt_band}-px band, box = true mask's bounding box + {args.pad} px, "
          f"from-box bands in px per side\n")  # fmt: skip
    print(f"{'trimap':<34} {'mIoU':>6} {'min':>6}")
    for name, values in scores.items():
        print(f"{name:<34} {statistics.mean(values):>6.3f} {min(values):>6.3f}")
    print(f"\nfrom-box on a 1088x1920 frame: {statistics.median(times):.2f} s (median of {args.runs})")
    if args.json:
        print(
            json.dumps(
                {name: statistics.mean(v) for name, v in scores.items()} | {"hd_seconds": statistics.median(times)}
            )
        )


if __name__ == "__main__":
    main()
