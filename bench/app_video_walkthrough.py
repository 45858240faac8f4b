"""A video through the app, as a user takes it, over HTTP: box keyframes at both ends, the settings the page
proposes, Estimate, Propagate, Matte (which ends with the foreground video: RGBA, ProRes 4444), the video
downloaded from the page's link; prints the estimate against the measured run and scores the result
against the generated truth.

    python -m bench.app_video_walkthrough --frames 240 --fps 24 --size 720x1280 --load CKPT [--steps 20 --crop 256]
        [--settings proposed|rule] [--out DIR] [--compare OTHER_OUT]

The video is generated (a moving, deforming, soft-edged subject over a moving background, H.264 .mp4 at
--fps); the boxes are the true subject's bounding box plus 5 px, cut out by the app's Box tool (GrabCut).
Finetuning starts from --load for --steps steps at --crop crops (0 steps: propagate with --load as it is).
--settings proposed runs with what the page proposes (the path measured on the clip: tune); rule with
the proposal's internal size and memory limit but the path as the published computation's, unmeasured.
Scores: the fused trimaps' mIoU against the truth's trimaps (unknown where 0 < alpha < 1, widened by a
10 px kernel; keyframes left out) and the mattes' foreground IoU (alpha > 0.5) against the truth's, per
frame; --compare: the share of fused labels equal to another walkthrough's (its --out).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, TRIMAP_SUFFIX
from dataset.synthetic import render_frames
from dataset.video import write_video
from evaluation.folders import evaluate_folders, read_labels
from inference.layout import results_of
from utils.io import atomic_write_png

REPO = Path(__file__).resolve().parents[1]


class Page:
    """The app's HTTP API as the page uses it: the cookie after the token, and the XSRF header for changes."""

    def __init__(self, url: str) -> None:
        self.base = url.split("/?")[0]
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        html = opener.open(url).read().decode()
        self.xsrf = re.search(r'name="xsrf-token" content="([^"]+)"', html).group(1)
        self.opener = opener

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if method != "GET":
            request.add_header("X-XSRF-Token", self.xsrf)
        if content_type:
            request.add_header("Content-Type", content_type)
        return self.opener.open(request).read()

    def json(self, method: str, path: str, payload: object | None = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        return json.loads(self.call(method, path, body, "application/json" if body else None))

    def run_job(self, clip: str, kind: str) -> tuple[dict, float]:
        start = time.perf_counter()
        self.json("POST", "/api/job", {"clip": clip, "kind": kind})
        while True:
            job = self.json("GET", "/api/job")["job"]
            if job["state"] != "running":
                return job, time.perf_counter() - start
            time.sleep(1.0)


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "walkthrough-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--size", default="720x1280", help="HEIGHTxWIDTH")
    parser.add_argument("--load", required=True, help="the starting checkpoint")
    parser.add_argument("--steps", type=int, default=20, help="finetuning steps (0: propagate with --load as it is)")
    parser.add_argument("--crop", type=int, default=256, help="finetuning crops, pixels a side")
    parser.add_argument("--out", default=None, help="keep everything here (default: a temporary folder)")
    parser.add_argument("--settings", choices=("proposed", "rule"), default="proposed",
                        help="the page's proposal (the path measured here), or the path unmeasured")  # fmt: skip
    parser.add_argument(
        "--compare", default=None, help="another walkthrough's --out: label agreement of the fused trimaps"
    )
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    root = Path(args.out or tempfile.mkdtemp(prefix="walkthrough-"))
    workspace, save = root / "videos", root / "results"
    workspace.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames, alphas = render_frames(args.frames, height, width, seed=7)
    write_video(workspace / "walk.mp4", frames, args.fps)
    truth = root / "truth" / "walk"
    truth.mkdir(parents=True, exist_ok=True)
    for index, alpha in enumerate(alphas):
        atomic_write_png(truth / f"{index:05d}{ALPHA_SUFFIX}", np.round(alpha * 255).astype(np.uint8))
    print(f"video: {args.frames} frames of {width}x{height} in {time.perf_counter() - started:.0f} s")
    command = [sys.executable, str(REPO / "tgm.py"), "app", "--workspace", str(workspace), "--save", str(save),
               "--port", "0"]  # fmt: skip
    if args.steps:
        cfg = root / "walk.yaml"
        cfg.write_text(
            f"TRAIN:\n  LOAD_CKPT: '{Path(args.load).resolve()}'\n  TOTAL_STEPS: {args.steps}\n"
            f"  TRAIN_INPUT_SIZE: ({args.crop}, {args.crop})\n  BASE_LR: 1.0e-5\nSYSTEM:\n  NUM_WORKERS: 1\n"
            "  RANDOM_SEED: 7\n"  # the same finetuning in every walkthrough: runs differ by their settings only
        )
        command += ["--cfg", str(cfg)]
    else:
        command += ["--load", str(Path(args.load).resolve())]
    app = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        url = next(m.group(0) for line in app.stdout if (m := re.search(r"http://\S+token=\S+", line)))
        threading.Thread(target=lambda: [None for _ in app.stdout], daemon=True).start()  # keep its pipe drained
        page = Page(url)
        last = args.frames - 1
        for index in (0, last):
            ys, xs = np.nonzero(alphas[index] > 0)
            box = [int(xs.min()) - 5, int(ys.min()) - 5, int(xs.max()) + 5, int(ys.max()) + 5]
            body, kind = multipart({"box": json.dumps(box), "band": "10"})
            stem = f"{index:05d}"
            trimap = page.call("POST", f"/api/clips/walk/from-box/{stem}", body, kind)
            page.call("PUT", f"/api/clips/walk/keyframe/{stem}", trimap, "image/png")
        settings = page.json("GET", "/api/clips/walk/settings")
        print("proposed settings:", settings["flags"], "|", "; ".join(settings["notes"].values()))
        chosen = dict(settings["proposed"])
        if args.steps:  # the finetuning asked for, set in the page as a user would
            chosen |= {"finetune_steps": args.steps, "finetune_crop": args.crop}
        if args.settings == "rule":
            chosen["tune"] = False
        settings = page.json("POST", "/api/clips/walk/settings", chosen)
        print(f"run settings ({'the path unmeasured' if args.settings == 'rule' else 'as proposed'}):",
              " ".join(settings["flags"]))  # fmt: skip
        estimate_job, estimate_s = page.run_job("walk", "estimate")
        assert estimate_job["state"] == "done", estimate_job["log"][-5:]
        estimate = page.json("GET", "/api/clips/walk/estimate")["estimate"]
        print(f"estimate job: {estimate_s:.0f} s; estimated run: {estimate['seconds']:.0f} s "
              f"(finetune {estimate['finetune_seconds']:.0f}, propagate {estimate['propagate_seconds']:.0f}, "
              f"fuse {estimate['fuse_seconds']:.0f}), disk {estimate['disk_bytes'] / 2**20:.0f} MiB")  # fmt: skip
        if estimate.get("tuned"):
            print("the estimate's measurement:", estimate["tuned"]["summary"])
        job, propagate_s = page.run_job("walk", "propagate")
        assert job["state"] == "done", job["log"][-5:]
        summary = json.loads((save / "summary.json").read_text())[0]
        if summary.get("path"):
            print("the run's path, measured after its finetuning:", summary["path"])
        result = results_of(save, "walk")[0].path
        written = [*result.rglob("*"), *(save / "train_log" / "walk").rglob("*")]  # the estimate counts both
        disk = sum(p.stat().st_size for p in written if p.is_file() and "matte" not in p.parts)
        print(f"propagate job: {propagate_s:.0f} s wall (finetune {summary['finetune_s']:.0f} s, propagate "
              f"{summary['propagate_s']:.0f} s), {disk / 2**20:.0f} MiB written (results and finetuning); measured / "
              "estimated: "
              f"{propagate_s / estimate['seconds']:.2f} (whole job), "
              f"{summary['propagate_s'] / estimate['propagate_seconds']:.2f} (propagation), "
              f"{summary['finetune_s'] / max(estimate['finetune_seconds'], 1e-9):.2f} (finetuning), "
              f"{disk / estimate['disk_bytes']:.2f} (disk)")  # fmt: skip
        keyframes = {f"{0:05d}", f"{last:05d}"}
        scores = evaluate_folders(result / "ensemble", truth, kind="alpha", width=10, skip=keyframes)
        print(f"fused trimaps against the truth (frames between the keyframes): mIoU {scores.miou:.3f}")
        if args.compare:
            other = results_of(Path(args.compare) / "results", "walk")[0].path / "ensemble"
            agree = [np.mean(read_labels(path) == read_labels(other / path.name))
                     for path in sorted((result / "ensemble").glob(f"*{TRIMAP_SUFFIX}"))]  # fmt: skip
            print(f"fused labels equal to {args.compare}'s: {np.mean(agree):.4%} (lowest frame {min(agree):.4%})")
        matte_job, matte_s = page.run_job("walk", "matte")
        assert matte_job["state"] == "done", matte_job["log"][-5:]
        ious = []
        for index, alpha in enumerate(alphas):
            matte = cv2.imread(str(result / "matte" / f"{index:05d}_alpha.png"), cv2.IMREAD_UNCHANGED)
            mine, true = matte > 127, alpha > 0.5
            ious.append(float((mine & true).sum() / max((mine | true).sum(), 1)))
        picks = sorted({0, 1, last // 8, last // 4, last // 2, 3 * last // 4, last - 1, last})
        print("mattes' foreground IoU against the truth: mean "
              f"{np.mean(ious):.3f}; frames " + ", ".join(f"{i}: {ious[i]:.2f}" for i in picks))  # fmt: skip
        video = root / "walk_foreground.mov"
        video.write_bytes(page.call("GET", "/api/clips/walk/foreground.mov"))  # the page's download link
        print(
            f"matte job (mattes, foreground video): {matte_s:.0f} s; downloaded {video}"
            f" ({video.stat().st_size / 2**20:.1f} MiB); "
            f"everything in {root}; total {time.perf_counter() - started:.0f} s"
        )
    finally:
        app.terminate()
        app.wait(30)


if __name__ == "__main__":
    main()
