"""The clip driver: propagate every part of a clip and write its result folder (``test_mf_2.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from dataset.clip import Clip, ClipFrames, check_sizes, trimap_warnings
from dataset.trimap import probs_to_png
from inference.ensemble import frames_of, fuse_frame
from inference.layout import ResultFolder
from inference.memory_bank import MemoryBank, Slot
from inference.options import PropagationOptions
from inference.plan import Part, part_confidence, plan_parts, work_units
from inference.propagator import (
    FrameSource,
    HostProbs,
    PartStep,
    Propagator,
    QueryCache,
    keyframe_probs,
    probs_to_image,
)
from inference.records import PartRecords, RunInputs
from inference.uncertainty import uncertainty_of, write_uncertainty
from model.checkpoint import load_checkpoint
from model.folding import fold_batch_norms
from model.stm import STM
from utils.distributed import SINGLE, World, agree_on_success, gather, share_by_load
from utils.errors import UserError
from utils.images import encode_png, read_image
from utils.io import BackgroundWriter, atomic_write_png
from utils.logs import progress
from utils.precision import autocast_for

log = logging.getLogger(__name__)


def configure_model(model: STM, options: PropagationOptions, device: torch.device) -> STM:
    """Set the model up for the chosen path and move it to ``device`` (eval mode).

    - naive: the published computation as it was (affinity always materialised, decoder skip
      branches once per object, keyframes encoded once per part): the baseline.
    - default: the published operations, without repeating work whose result is the same
      (keyframes encoded once per run, I/O overlapped), and a bounded memory read only where the
      full affinity would exceed its memory budget.
    - fast: the default with batch norm folded into the convolutions (model.folding), channels_last
      tensors and the decoder's skip branches computed once for both objects (less work; the
      rounding differs, so results move from the published numbers). Returns a new model.
    - compile: torch.compile of the encoders, key/value heads and decoder (inductor; on the CPU
      with weight freezing and prepacking). No CUDA graphs: the memory keeps the encoders'
      outputs across steps, which graph replays would overwrite.
    """
    model.memory_read = "naive" if options.naive else "bounded"
    model.share_skips = options.fast
    # on CUDA the fused read may run in half precision: on the demo's finetuned checkpoint it moved
    # at most 0.1% of labels (docs/performance.md, "The read in half precision")
    model.read_follows_autocast = device.type == "cuda" and options.precision in ("bf16", "fp16")
    model.read_heads = options.read_heads or None
    model.eval()
    if options.fast:
        model = fold_batch_norms(model)
    model.to(device)
    model.to(memory_format=options.memory_format)
    if options.compile:
        compile_model(model, device)
    return model


def compile_model(model: STM, device: torch.device) -> None:
    """torch.compile the parts of ``model`` whose shapes are fixed for a clip, in place (the
    memory read, whose size grows, stays eager)."""
    import torch._inductor.config as inductor_config

    if device.type == "cpu":
        inductor_config.freezing = True  # weights are constants at inference: fold and prepack them
    for part in (model.Encoder_M, model.Encoder_Q, model.KV_M_r4, model.KV_Q_r4, model.Decoder):
        part.compile(dynamic=False)
    model.Decoder.skip_branches = torch.compile(model.Decoder.skip_branches, dynamic=False)


def load_model(checkpoint: str | Path, options: PropagationOptions, device: torch.device) -> STM:
    """An STM with the weights of ``checkpoint``, set up for ``options`` on ``device``."""
    model = STM()
    load_checkpoint(model, checkpoint)
    return configure_model(model, options, device)


OnStep = Callable[[int, PartStep, np.ndarray], None]


@dataclass
class Propagation:
    """What propagate_clip did: the result folder and which parts it reused or computed."""

    result: ResultFolder
    reused: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    shared_steps: int = 0  # segment steps that reused the query features of an earlier visit
    shared_peak_bytes: int = 0  # the most the query cache held


def propagate_clip(
    model: STM,
    clip: Clip,
    save_root: Path,
    options: PropagationOptions,
    device: torch.device,
    world: World = SINGLE,
    on_step: OnStep | None = None,
) -> Propagation:
    """Propagate the parts of ``clip`` and write its result folder under ``save_root`` (part
    PNGs with their records, conf.json; see inference.layout).

    Parts that an earlier run into the same folder finished with the same inputs (see
    inference.records) are reused unless ``options.recompute``; when any part changes, the fused
    outputs of the earlier run are removed. Under torchrun (``world``) the parts to compute are
    shared out among the ranks, balanced by frame count; rank 0 arranges the folder first and
    writes conf.json once every rank is done. on_step(part index, step, H x W x 3 probabilities)
    sees every computed frame (benchmarks use it).
    """
    height, width = check_sizes(clip)
    parts = plan_parts(clip.keyframe_indices, len(clip))
    if not parts:
        raise UserError(f"{clip.path} has a single frame and it is the keyframe: there is nothing to propagate")
    if options.discard_parts and world.distributed:
        raise UserError(
            "--discard_parts fuses each frame once all its parts are done, in one process: run it without torchrun "
            "(or keep the parts and fuse with ensemble.py)"
        )
    keep_every = options.keep_every(len(clip))
    result = ResultFolder.of(save_root, clip.name, options.mem_every)
    records = PartRecords(clip, RunInputs.of(model, options, keep_every, device))
    planned = [records.record(part) for part in parts]
    reused: set[int] = set()
    refused = None
    with contextlib.ExitStack() as held:
        if world.is_main:  # rank 0 holds the folder for the whole run: one writer per result folder
            try:
                held.enter_context(result.lock())
                recompute = options.recompute or options.discard_parts  # discarded parts cannot be reused
                reused, unchanged = result.adopt_parts([r["fingerprint"] for r in planned], recompute)
                if not unchanged:
                    result.clear_fused()
            except Exception as exc:  # every rank must reach the gather, or the others wait forever
                refused = exc
        decided = gather(world, None if refused else sorted(reused))[0]  # rank 0 decided, for every rank
        if decided is None:
            raise refused or UserError(f"rank 0 could not prepare {result.path} (its log says why)")
        return _propagate_parts(model, clip, (height, width), parts, planned, set(decided), result, options,
                                keep_every, device, world, on_step)  # fmt: skip


def _propagate_parts(
    model, clip, size, parts, planned, reused, result, options, keep_every, device, world, on_step
) -> Propagation:
    """propagate_clip once the folder is arranged: share out, compute, agree, write conf.json."""
    height, width = size
    to_compute = [k for k in range(len(parts)) if k not in reused]
    # With query sharing on, the forward and backward part of a segment go to the same rank.
    units = work_units(parts, to_compute, segments_together=options.share_query_bytes(device) > 0)
    my_units = share_by_load([sum(len(parts[k]) for k in unit) for unit in units], world.size)[world.rank]
    mine = sorted(k for i in my_units for k in units[i])
    working = options.working_size(height, width)
    log.info(
        "%s: %d frames of %dx%d%s, keyframes %s, %d parts (%d reused, %d to compute%s), keep every %d, max_memory %s",
        clip.path, len(clip), width, height,
        f" (propagated at {working[1]}x{working[0]})" if working != (height, width) else "",
        clip.keyframe_indices, len(parts), len(reused), len(to_compute),
        f"; this rank: {mine}" if world.distributed else "", keep_every, options.max_memory,
    )  # fmt: skip
    error = None
    shared = (0, 0)
    fusion = EarlyFusion(result, parts, clip) if options.discard_parts else None
    try:
        if mine:
            on_part = fusion.part_done if fusion else (lambda k: result.write_part_record(k, planned[k]))
            shared = _run_parts(model, clip, (height, width), parts, mine, result, options, keep_every, device,
                                on_step, on_part=on_part, on_written=fusion.hold if fusion else None)  # fmt: skip
    except Exception as exc:  # every rank must reach agree_on_success, or the others wait forever
        error = exc
    finally:
        if fusion is not None:
            fusion.close()
    agree_on_success(world, error)
    if world.is_main:
        conf = conf_of(parts, clip)
        if fusion is not None:
            write_uncertainty(result, uncertainty_of(fusion.scores, conf))
        result.write_conf(conf)
    return Propagation(result, sorted(reused), to_compute, *shared)


FUSION_HELD_BYTES = 1 << 30  # part images --discard_parts keeps in memory for fusing (1080p: about 170)


class EarlyFusion:
    """``--discard_parts``: each frame is fused (ensemble trimap, overlay, uncertainty score) as
    soon as every part covering it is done, and then its part PNGs are deleted, so that the parts
    on disk never hold more than the segments in progress. The part images the writers just wrote
    are kept in memory, up to ``held_bytes`` (the newest kept: the backward part of a segment
    needs the forward part's last frames first), and fused from there instead of decoding their
    PNGs again (the same pixels: PNG is lossless)."""

    def __init__(self, result: ResultFolder, parts: list[Part], clip: Clip, held_bytes: int | None = None) -> None:
        self.result, self.parts, self.clip = result, parts, clip
        self.covering = frames_of(conf_of(parts, clip))  # stem -> [(part, weight)]
        self.waiting = {stem: len(covered) for stem, covered in self.covering.items()}
        self.unfused = {k: len(part) for k, part in enumerate(parts)}
        self.frames = ClipFrames(clip.path, clip.stems, clip.frames)
        self.writer = BackgroundWriter(workers=1)
        self.scores: dict[str, float] = {}
        self.held_bytes = FUSION_HELD_BYTES if held_bytes is None else held_bytes
        self._held, self._held_total = OrderedDict(), 0
        self._lock = threading.Lock()
        result.ensemble_dir.mkdir(exist_ok=True)
        result.envis_dir.mkdir(exist_ok=True)

    def hold(self, k: int, stem: str, image: np.ndarray) -> None:
        """On a writer thread: part ``k``'s image of frame ``stem``, just written to its PNG."""
        with self._lock:
            self._held[(k, stem)] = image
            self._held_total += image.nbytes
            while self._held_total > self.held_bytes and self._held:
                self._held_total -= self._held.popitem(last=False)[1].nbytes

    def _part_image(self, k: int, stem: str) -> np.ndarray:
        with self._lock:
            image = self._held.pop((k, stem), None)
            if image is not None:
                self._held_total -= image.nbytes
                return image
        return read_image(self.result.part_png(k, stem), cv2.IMREAD_COLOR)

    def part_done(self, k: int) -> None:
        """Part ``k``'s PNGs are written: fuse the frames it completes, then drop their part PNGs."""
        ready = []
        for frame in self.parts[k].frames:
            stem = self.clip.stems[frame]
            self.waiting[stem] -= 1
            if self.waiting[stem] == 0:
                covered = self.covering[stem]
                pngs = [self._part_image(j, stem) for j, _ in covered]
                weights = [w for _, w in covered]
                self.scores[stem] = fuse_frame(self.result, stem, pngs, weights, self.frames, self.writer)
                ready.append(stem)
        self.writer.flush()  # the fused outputs are on disk before their inputs go
        for stem in ready:
            for j, _ in self.covering[stem]:
                self.result.part_png(j, stem).unlink()
                self.unfused[j] -= 1
                if self.unfused[j] == 0:
                    shutil.rmtree(self.result.part_dir(j))

    def close(self) -> None:
        self.writer.close()


def make_propagator(
    model: STM, clip: Clip, options: PropagationOptions, keep_every: int, device: torch.device
) -> Propagator:
    """A Propagator over ``clip``'s frames and keyframe trimaps (warnings logged for trimaps
    that lack a class)."""
    keyframes = {}
    working = None
    for k in clip.keyframe_indices:
        labels = clip.read_keyframe(k)
        working = options.working_size(*labels.shape)
        keyframes[k] = keyframe_probs(labels, working)
        problems = trimap_warnings(labels)
        if problems:
            log.warning("keyframe %s has %s", clip.trimap_path(k), " and ".join(problems))
    batch = options.query_batch_for(device, *working)
    frames = FrameSource(clip, device, workers=options.io_threads(device), memory_format=options.memory_format,
                         size=working, cache_size=6 + batch)  # fmt: skip
    budget = options.share_query_bytes(device)
    if batch > 1 or budget > 0:
        log.info("query frames: %d per batch; %.0f MiB to share between parts", batch, budget / 2**20)
    return Propagator(
        model, frames, keyframes, keep_every, options.max_memory, autocast_for(options.precision, device),
        cache_keyframes=not options.naive, query_cache=QueryCache(budget) if budget > 0 else None, query_batch=batch,
    )  # fmt: skip


def _run_parts(
    model: STM,
    clip: Clip,
    size: tuple[int, int],
    parts: list[Part],
    part_indices: list[int],
    result: ResultFolder,
    options: PropagationOptions,
    keep_every: int,
    device: torch.device,
    on_step: OnStep | None,
    on_part: Callable[[int], None],
    on_written: Callable[[int, str, np.ndarray], None] | None = None,
) -> tuple[int, int]:
    """Propagate the parts ``part_indices`` of ``parts`` and write their PNGs (frames: ``size``).
    Returns (segment steps that shared query features, the most bytes the query cache held)."""
    height, width = size
    working = options.working_size(height, width)
    propagator = make_propagator(model, clip, options, keep_every, device)
    if propagator.query_cache is not None:
        propagator.query_cache.expect([parts[k] for k in part_indices])
    writer = BackgroundWriter(workers=options.io_threads(device))
    total = sum(len(parts[k]) for k in part_indices)
    last_visit = {f: k for k in part_indices for f in (*parts[k].frames, *parts[k].fixed)}
    forget = getattr(clip.frames, "forget", None)  # a video's decoded frames, once no part needs them
    start = time.perf_counter()
    first_visit = None  # seconds to the first segmented frame: cuDNN autotuning and compiling show here
    try:
        with progress(total=total, desc=clip.name, unit="frame") as bar:
            for k in part_indices:
                result.part_dir(k).mkdir(exist_ok=True)
                bar.set_postfix_str(f"part {k + 1}/{len(parts)}", refresh=False)
                for step in propagator.run_part(parts[k]):
                    host = HostProbs.of(step.probs, *working, frame_size=size)
                    if on_step is not None:
                        on_step(k, step, host.numpy())
                    stem = clip.stems[step.frame]
                    writer.submit(write_part_png, result.part_png(k, stem), host, functools.partial(on_written, k, stem)
                                  if on_written else None)  # fmt: skip
                    bar.update(1)
                    if first_visit is None and step.local_index > 0:
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)  # steps are queued: wait for the first one
                        first_visit = time.perf_counter() - start
                writer.flush()
                on_part(k)
                if forget is not None:
                    forget([f for f, last in last_visit.items() if last == k])
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(device, clip, options) from exc
        raise
    finally:
        writer.close()
        propagator.frames.close()
    elapsed = time.perf_counter() - start
    log.info("%d frames in %.1f s (%.2f frames/s; first visit %.1f s) -> %s", total, elapsed,
             total / max(elapsed, 1e-9), first_visit or 0.0, result.path)  # fmt: skip
    if device.type == "cuda":
        peaks = torch.cuda.max_memory_reserved(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
        log.info("GPU memory: at most %.0f MiB reserved, %.0f MiB allocated (this process so far)", *peaks)
    cache = propagator.query_cache
    if cache is None:
        return 0, 0
    if cache.hits:
        log.info("query features shared: %d of %d segment steps, at most %.0f MiB held", cache.hits,
                 cache.hits + cache.misses, cache.peak_bytes / 2**20)  # fmt: skip
    return cache.hits, cache.peak_bytes


def write_part_png(path: Path, probs: HostProbs, written: Callable[[np.ndarray], None] | None = None) -> None:
    """On a writer thread: wait for the step's probabilities, quantise them, write the part PNG
    (then hand the image to ``written``)."""
    image = probs_to_png(probs.numpy())
    atomic_write_png(path, image)
    if written is not None:
        written(image)


@dataclass(frozen=True)
class VisitTiming:
    """What one segmented frame costs here (see :func:`time_visits`)."""

    seconds: float  # the propagator's step: query, memory read, decoder, the previous frame memorised
    write_seconds: float  # its probabilities to a part PNG, on a writer thread in a real run
    png_bytes: int  # one part PNG
    read_seconds: float  # one part PNG decoded again (fusing reads every part's PNG of a frame)


def time_visits(
    model: STM, clip: Clip, options: PropagationOptions, device: torch.device, visits: int = 3
) -> VisitTiming:
    """Time the propagator on a short part off the clip's first keyframe, as a run would step it
    (one untimed warm-up step, then the median of ``visits`` steps), and one part PNG written and
    read back. Nothing is written to disk. The probe's memory holds fewer entries than a run's parts
    read on average (``mean_memory_size``), so the step is corrected by the read timed at both sizes;
    no query work is shared, as it is on a run's second visits (cheaper)."""
    height, width = check_sizes(clip)
    working = options.working_size(height, width)
    first = clip.keyframe_indices[0]
    ahead = list(range(first, min(len(clip), first + visits + 2)))
    behind = list(range(first, max(-1, first - visits - 2), -1))
    frames = ahead if len(ahead) >= len(behind) else behind
    if len(frames) < 2:
        raise UserError(f"{clip.path}: no frame to propagate to, so nothing to time")
    keep_every = options.keep_every(len(clip))
    # one query frame at a time: a batch would put the encoder's work into the untimed first step
    propagator = make_propagator(model, clip, dataclasses.replace(options, query_batch=1), keep_every, device)
    probe = Part(tuple(frames), (first,))
    seconds, probs = [], None
    try:
        steps = propagator.run_part(probe)
        next(steps)  # the keyframe itself: nothing computed
        while True:
            start = time.perf_counter()
            step = next(steps, None)
            if step is None:
                break
            probs = step.probs.float().cpu()  # waits for the device
            seconds.append(time.perf_counter() - start)
        # The probe's memory is small; a run's parts read more entries: time the read at both sizes.
        probed = round(mean_memory_size([probe], keep_every, options.max_memory, skip_first=True))
        reached = round(mean_memory_size(plan_parts(clip.keyframe_indices, len(clip)), keep_every, options.max_memory))
        extra = 0.0
        if reached > probed:
            with torch.inference_mode():
                entry = propagator.fixed_entry(first)
                with propagator.autocast():
                    query = model.encode_query(propagator.frames.get(frames[-1]))
                read = [
                    segment_seconds(model, [entry] * size, query, propagator.autocast) for size in (probed, reached)
                ]
            extra = read[1] - read[0]
    finally:
        propagator.frames.close()
    start = time.perf_counter()
    data = encode_png(probs_to_png(probs_to_image(probs, *working, frame_size=(height, width))))
    write_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    read_seconds = time.perf_counter() - start
    timed = sorted(seconds[1:] or seconds)
    return VisitTiming(timed[len(timed) // 2] + max(extra, 0.0), write_seconds, len(data), read_seconds)


def mean_memory_size(parts: list[Part], keep_every: int, max_memory: int | None, skip_first: bool = False) -> float:
    """The memory entries a segment step reads, on average over the parts' steps (the bank's own rule,
    run with placeholders); ``skip_first``: leave out each part's first step (a timing's warm-up)."""
    sizes = []
    for part in parts:
        bank: MemoryBank[None] = MemoryBank([Slot(k, None) for k in part.fixed], keep_every, max_memory)
        for i in range(1, len(part)):
            if i >= 2:
                bank.set_temporary(Slot(part.frames[i - 1], None))
            if i >= 2 or not skip_first:
                sizes.append(len(bank.slots()))
            bank.after_segment(i)
    return sum(sizes) / max(len(sizes), 1)


def segment_seconds(model: STM, memory: list, query, autocast) -> float:
    """Seconds of one segment step against ``memory`` (the median of 3, after one untimed)."""
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        with autocast():
            model.segment(None, memory, query=query).float().cpu()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds[1:])[1]


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))


def out_of_memory(device: torch.device, clip: Clip, options: PropagationOptions) -> UserError:
    where = "GPU" if device.type == "cuda" else "main"
    bound = f"--max_memory {options.max_memory}" if options.max_memory else "no --max_memory"
    return UserError(
        f"out of {where} memory while propagating {clip.path} (mem_every {options.mem_every}, {bound}). "
        "Bound the memory with --max_memory (e.g. 5) or a larger --mem_every, drop --naive, try "
        "--precision fp16 on a GPU, or downscale the frames (tgm.py extract --max_edge)"
    )


def conf_of(parts: list[Part], clip: Clip) -> list[dict[str, float]]:
    """conf.json's content: one dict per part, ``{stem: 1 - i / part_length}`` in visiting order."""
    return [{clip.stems[f]: weight for f, weight in zip(part.frames, part_confidence(part))} for part in parts]
