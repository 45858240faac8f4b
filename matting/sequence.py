"""Matting every frame of a clip that has a trimap: in parallel, resumable, one bad frame at a time.

Per frame ``<stem>``, into the output folder:

- ``<stem>_alpha.png``: the alpha matte, 8-bit (16-bit with ``alpha16``);
- ``<stem>_fg.png``: RGBA, the estimated foreground colours with the alpha: the lossless result;
- ``<stem>_comp.png``: the foreground over the new background, when one is given;
- with ``exr`` (a compression, zip or piz): ``<stem>_alpha.exr``, the matte as one half-float
  channel ``A``, and ``<stem>_fg.exr``, the foreground as RGBA half floats in linear light,
  premultiplied by alpha (the OpenEXR convention; ``utils/exr.py``). The PNGs are straight:
  their colours are not multiplied by their alpha;
- ``<stem>_matte.json``: what the frame was matted from (the trimap's and the frame's contents and
  the settings), written last. A frame is skipped only when its outputs exist and this record
  matches, so a corrected trimap is matted again without ``--overwrite``.

Frames are split into short runs of consecutive frames; each run is solved in order, every frame
starting from the previous frame's alpha (the solver converges in fewer iterations), and the runs
are shared out among ``workers`` processes. The runs are the same whatever the number of workers,
so the outputs are too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, file_digest
from dataset.trimap import decode_trimap
from dataset.video import FrameCache, VideoFrames, is_video, probe_video
from matting.background import Background, BackgroundFrames
from matting.solve import FrameError, Solver, composite, foreground, one_sided
from utils.exr import write_foreground_exr, write_matte_exr
from utils.images import read_alpha, read_image
from utils.io import atomic_write_json, atomic_write_png, file_digest_once
from utils.logs import progress

log = logging.getLogger(__name__)

FG_SUFFIX = "_fg.png"
COMPOSITE_SUFFIX = "_comp.png"
ALPHA_EXR_SUFFIX = "_alpha.exr"
FG_EXR_SUFFIX = "_fg.exr"
RECORD_SUFFIX = "_matte.json"
RUN_LENGTH = 8  # frames solved in a row with warm starts; runs are the unit of parallel work


@dataclass(frozen=True)
class MatteFrame:
    """One frame to matte: its stem, index in the clip, frame (a PNG, or the clip's video, whose
    frame ``index`` it is) and trimap files."""

    stem: str
    index: int
    frame: Path
    trimap: Path

    def read_bgr(self) -> np.ndarray:
        if is_video(self.frame):
            return np.ascontiguousarray(_video(self.frame).read_rgb(self.index)[..., ::-1])
        return read_image(self.frame, cv2.IMREAD_COLOR)

    def frame_digest(self) -> str:
        if is_video(self.frame):
            return _video(self.frame).digest(self.index)
        return file_digest(self.frame)


@functools.lru_cache(maxsize=2)
def _video_of(path: Path, size: int, mtime_ns: int) -> VideoFrames:
    return VideoFrames(probe_video(path), FrameCache(256 << 20))  # runs are consecutive: a small cache will do


def _video(path: Path) -> VideoFrames:
    """The decoder of a clip's video, one per process and file version."""
    stat = path.stat()
    return _video_of(path, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class MatteSettings:
    out: Path
    solver: Solver
    alpha16: bool = False
    background: Background | None = None
    exr: str | None = None  # also write EXR mattes and foregrounds with this compression (zip, piz)

    def record_path(self, stem: str) -> Path:
        return self.out / f"{stem}{RECORD_SUFFIX}"

    def record(self, item: MatteFrame) -> dict:
        """What ``item``'s outputs are made of; compared with the record on disk to skip it."""
        background = None
        if self.background is not None:
            path = self.background.path
            background = {"kind": self.background.kind, "rgb": list(self.background.rgb),
                          "file": file_digest_once(path) if path else None}  # fmt: skip
        return {
            "trimap": file_digest(item.trimap), "frame": item.frame_digest(), "alpha16": self.alpha16,
            "solver": [self.solver.method, self.solver.tolerance, self.solver.max_iterations],
            "background": background,
        }  # fmt: skip

    def is_current(self, item: MatteFrame) -> bool:
        """Its outputs exist and were made from the inputs and settings it has now."""
        if not all(p.exists() for p in self.outputs(item.stem)):
            return False
        try:
            return json.loads(self.record_path(item.stem).read_text()) == self.record(item)
        except (OSError, ValueError):
            return False

    def outputs(self, stem: str) -> list[Path]:
        names = [f"{stem}{ALPHA_SUFFIX}", f"{stem}{FG_SUFFIX}"]
        if self.background is not None:
            names.append(f"{stem}{COMPOSITE_SUFFIX}")
        if self.exr is not None:
            names += [f"{stem}{ALPHA_EXR_SUFFIX}", f"{stem}{FG_EXR_SUFFIX}"]
        return [self.out / name for name in names]


@dataclass
class MatteReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # frames matted without the solver, and why


def matte_frame(
    item: MatteFrame,
    settings: MatteSettings,
    start: np.ndarray | None,
    backgrounds: BackgroundFrames | None,
    notes: dict[str, str] | None = None,
) -> np.ndarray:
    """Solve and write one frame's outputs; returns its alpha. FrameError for bad inputs; a trimap
    with one known side only is answered without the solver and said in ``notes``."""
    record = settings.record(item)  # before reading: a trimap corrected meanwhile is matted again next time
    settings.record_path(item.stem).unlink(missing_ok=True)  # until the new outputs are all written
    bgr = item.read_bgr()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
    labels = decode_trimap(read_image(item.trimap, cv2.IMREAD_GRAYSCALE))
    alpha = settings.solver.alpha(rgb, labels, start)
    why = one_sided(labels)
    if why is not None and notes is not None:
        notes[item.stem] = why
    fg = foreground(rgb, alpha)
    out_alpha, out_fg = settings.outputs(item.stem)[:2]
    out_comp = [settings.out / f"{item.stem}{COMPOSITE_SUFFIX}"] if settings.background is not None else []
    if settings.alpha16:
        atomic_write_png(out_alpha, np.round(alpha * 65535).astype(np.uint16))
    else:
        atomic_write_png(out_alpha, np.round(alpha * 255).astype(np.uint8))
    rgba = np.dstack([fg[..., ::-1], alpha])  # OpenCV writes BGRA
    atomic_write_png(out_fg, np.round(rgba * 255).astype(np.uint8))
    if out_comp and backgrounds is not None:
        image = composite(fg, alpha, backgrounds.get(item.index))
        atomic_write_png(out_comp[0], np.round(image[..., ::-1] * 255).astype(np.uint8))
    if settings.exr is not None:
        write_matte_exr(settings.out / f"{item.stem}{ALPHA_EXR_SUFFIX}", alpha, settings.exr)
        write_foreground_exr(settings.out / f"{item.stem}{FG_EXR_SUFFIX}", fg, alpha, settings.exr)
    atomic_write_json(settings.record_path(item.stem), record)  # last: the frame is done
    return alpha


def matte_run(run: list[MatteFrame], settings: MatteSettings, start_from: Path | None) -> MatteReport:
    """Matte consecutive frames in order, each starting from the previous alpha (the first from
    ``start_from``, an alpha file already written, when given)."""
    report = MatteReport()
    start = read_alpha(start_from) if start_from is not None and start_from.exists() else None
    backgrounds = None
    if settings.background is not None:
        height, width = run[0].read_bgr().shape[:2]
        backgrounds = BackgroundFrames(settings.background, height, width)
    try:
        for item in run:
            began = time.perf_counter()
            try:
                start = matte_frame(item, settings, start, backgrounds, report.notes)
            except FrameError as exc:
                report.failed[item.stem] = str(exc)
                start = None
                continue
            report.done.append(item.stem)
            report.seconds[item.stem] = time.perf_counter() - began
    finally:
        if backgrounds is not None:
            backgrounds.close()
    return report


def matte_clip(
    frames: list[MatteFrame], settings: MatteSettings, workers: int = 1, overwrite: bool = False
) -> MatteReport:
    """Matte ``frames`` (in clip order) into ``settings.out``; frames whose outputs exist and were
    made from the same trimap, frame and settings are skipped unless ``overwrite`` (a corrected
    trimap is matted again). A frame that cannot be matted is reported in the result, with its
    reason, and the others go on."""
    settings.out.mkdir(parents=True, exist_ok=True)
    report = MatteReport()
    todo = []
    for item in frames:
        if not overwrite and settings.is_current(item):
            report.skipped.append(item.stem)
        else:
            todo.append(item)
    if report.skipped:
        log.info(
            "%d frames already matted from their current trimaps in %s (skipped; --overwrite redoes them)",
            len(report.skipped), settings.out,
        )  # fmt: skip
    runs = split_runs(todo, workers)
    # A run starts from the alpha before it only when that frame was finished earlier (skipped
    # now), never from one being solved alongside: the result is the same for any --workers.
    skipped = set(report.skipped)
    alpha_of = {item.index: settings.out / f"{item.stem}{ALPHA_SUFFIX}" for item in frames if item.stem in skipped}
    with progress(total=len(todo), desc="matte", unit="frame") as bar:
        if workers <= 1 or len(runs) <= 1:
            for run in runs:
                _merge(report, matte_run(run, settings, alpha_of.get(run[0].index - 1)))
                bar.update(len(run))
        else:
            # spawn, not fork: forking a process whose numba or OpenMP threads already ran can crash.
            # Each worker gets its share of the cores (numba and OpenMP would each take them all).
            context = multiprocessing.get_context("spawn")
            threads = str(max(1, (os.cpu_count() or 1) // workers))
            with (
                _environment(NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads),
                ProcessPoolExecutor(workers, mp_context=context) as pool,
            ):
                futures = {
                    pool.submit(matte_run, run, settings, alpha_of.get(run[0].index - 1)): len(run) for run in runs
                }
                for future in as_completed(futures):
                    _merge(report, future.result())
                    bar.update(futures[future])
    return report


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables while the block runs (child processes started in it see them)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def split_runs(frames: list[MatteFrame], workers: int) -> list[list[MatteFrame]]:
    """Runs of consecutive frames (by clip index), at most RUN_LENGTH long."""
    if not frames:
        return []
    length = RUN_LENGTH
    runs: list[list[MatteFrame]] = []
    for item in frames:
        if runs and len(runs[-1]) < length and runs[-1][-1].index == item.index - 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _merge(report: MatteReport, part: MatteReport) -> None:
    report.done += part.done
    report.notes.update(part.notes)
    report.failed.update(part.failed)
    report.seconds.update(part.seconds)
