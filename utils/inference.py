"""``test_mf_2.py`` as a library: propagate a clip's keyframes and write the part PNGs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataset.clip import Clip, check_sizes, read_trimap, trimap_warnings
from dataset.trimap import probs_to_png
from model.stm import STM
from utils.distributed import SINGLE, World, agree_on_success, barrier, share_by_load
from utils.errors import UserError
from utils.io import BackgroundWriter, atomic_write_json, atomic_write_png
from utils.logs import progress
from utils.plan import Part, derive_mem_every, part_confidence, plan_parts
from utils.precision import autocast_for
from utils.propagate import FrameSource, PartStep, Propagator, keyframe_probs, probs_to_image

log = logging.getLogger(__name__)


@dataclass
class PropagationOptions:
    """How to propagate.

    mem_every: as given on the command line (0: derived from max_memory); names the folder.
    max_memory: bound on non-fixed memory entries, or None.
    n_threads: background threads for reading frames and writing PNGs (0: inline).
    dilation: FINETUNE.DILATION applied to the keyframe trimaps.
    precision: fp32, bf16 or fp16 (autocast); naive / fast: the computation path (configure_model).
    """

    mem_every: int = 5
    max_memory: int | None = None
    n_threads: int = 1
    dilation: int = 0
    precision: str = "fp32"
    naive: bool = False
    fast: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.fast else torch.contiguous_format


def configure_model(model: STM, options: PropagationOptions, device: torch.device) -> STM:
    """Set the model up for the chosen path and move it to ``device`` (eval mode).

    - naive: the published computation as it was (affinity always materialised, decoder skip
      branches once per object, keyframes encoded once per part): the baseline.
    - default: the same operations wherever they give the same numbers (skip branches shared by
      the objects, keyframes encoded once, I/O overlapped), and a chunked memory read only where
      the full affinity would exceed its memory budget.
    - fast: the default with channels_last tensors (faster convolutions on CPUs and GPUs; the
      rounding differs, so results move slightly from the published numbers).
    """
    model.memory_read = "naive" if options.naive else "chunked"
    model.share_skips = not options.naive
    model.eval().to(device)
    model.to(memory_format=options.memory_format)
    return model


def check_memory_options(mem_every: int, max_memory: int | None) -> None:
    """UserError for a memory schedule the spec rejects."""
    if mem_every < 0:
        raise UserError(f"--mem_every {mem_every}: must be >= 0 (0 means: derive it from --max_memory)")
    if max_memory is not None and max_memory < 1:
        raise UserError(f"--max_memory {max_memory}: must be >= 1 (or leave it out for no bound)")
    if mem_every == 0 and max_memory is None:
        raise UserError("--mem_every 0 needs --max_memory M (then every ceil(N / M)-th frame is kept)")


def result_dir_name(clip_name: str, mem_every: int) -> str:
    """``<clip>_mem<N>``, N as given on the command line (0 when derived from --max_memory)."""
    return f"{clip_name}_mem{mem_every}"


def _clear_stale(result_dir: Path, parts: list[Part], clip: Clip) -> None:
    """Remove what an earlier run into the same folder left that this run will not rewrite."""
    conf = result_dir / "conf.json"
    if conf.exists():
        conf.unlink()  # rewritten at the end; its absence marks an unfinished run
    for part_dir in result_dir.glob("part*"):
        suffix = part_dir.name[len("part") :]
        if not (part_dir.is_dir() and suffix.isdigit()):
            continue
        k = int(suffix)
        keep = {f"{clip.stems[f]}_tri.png" for f in parts[k].frames} if k < len(parts) else set()
        for png in part_dir.glob("*_tri.png"):
            if png.name not in keep:
                png.unlink()
        for tmp in part_dir.glob(".*.tmp"):
            tmp.unlink()
        if k >= len(parts) and not any(part_dir.iterdir()):
            part_dir.rmdir()


def propagate_clip(
    model: STM,
    clip: Clip,
    save_root: Path,
    options: PropagationOptions,
    device: torch.device,
    world: World = SINGLE,
    on_step: Callable[[int, PartStep, np.ndarray], None] | None = None,
) -> Path:
    """Propagate every part of ``clip`` and write ``<save>/<clip>_mem<M>/part<k>/<stem>_tri.png``
    and ``conf.json``. Returns the result folder.

    Under torchrun (``world``) the parts are shared out among the ranks, balanced by frame count;
    rank 0 clears what an earlier run left and writes conf.json once every rank is done.
    on_step(part index, step, H x W x 3 probabilities) sees every result (benchmarks use it).
    """
    check_memory_options(options.mem_every, options.max_memory)
    height, width = check_sizes(clip)
    parts = plan_parts(clip.keyframe_indices, len(clip))
    if not parts:
        raise UserError(f"{clip.path} has a single frame and it is the keyframe: there is nothing to propagate")
    mem_every = derive_mem_every(options.mem_every, options.max_memory, len(clip))
    result_dir = save_root / result_dir_name(clip.name, options.mem_every)
    mine = share_by_load([len(part) for part in parts], world.size)[world.rank]
    if world.is_main:
        result_dir.mkdir(parents=True, exist_ok=True)
        _clear_stale(result_dir, parts, clip)
    barrier(world)
    log.info(
        "%s: %d frames of %dx%d, keyframes %s, %d parts%s, mem_every %d, max_memory %s",
        clip.path, len(clip), width, height, clip.keyframe_indices, len(parts),
        f" (this rank: {mine})" if world.distributed else "", mem_every, options.max_memory,
    )  # fmt: skip
    error = None
    try:
        _run_parts(model, clip, parts, mine, result_dir, options, mem_every, (height, width), device, on_step)
    except Exception as exc:  # every rank must reach agree_on_success, or the others wait forever
        error = exc
    agree_on_success(world, error)
    if world.is_main:
        write_conf_json(result_dir, parts, clip)
    return result_dir


def _run_parts(
    model: STM,
    clip: Clip,
    parts: list[Part],
    part_indices: list[int],
    result_dir: Path,
    options: PropagationOptions,
    mem_every: int,
    size: tuple[int, int],
    device: torch.device,
    on_step: Callable[[int, PartStep, np.ndarray], None] | None,
) -> None:
    height, width = size
    keyframes = {}
    for k in clip.keyframe_indices:
        labels = read_trimap(clip.trimap_path(k), options.dilation)
        keyframes[k] = keyframe_probs(labels)
        problems = trimap_warnings(labels)
        if problems:
            log.warning("keyframe %s has %s", clip.trimap_path(k), " and ".join(problems))
    frames = FrameSource(clip, device, workers=min(options.n_threads, 2), memory_format=options.memory_format)
    writer = BackgroundWriter(workers=1 if options.n_threads > 0 else 0)
    propagator = Propagator(
        model, frames, keyframes, mem_every, options.max_memory, autocast_for(options.precision, device),
        cache_keyframes=not options.naive,
    )  # fmt: skip
    total = sum(len(parts[k]) for k in part_indices)
    start = time.perf_counter()
    try:
        with progress(total=total, desc=clip.name, unit="frame") as bar:
            for k in part_indices:
                part_dir = result_dir / f"part{k}"
                part_dir.mkdir(exist_ok=True)
                bar.set_postfix_str(f"part {k + 1}/{len(parts)}")
                for step in propagator.run_part(parts[k]):
                    probs = probs_to_image(step.probs, height, width)
                    if on_step is not None:
                        on_step(k, step, probs)
                    writer.submit(atomic_write_png, part_dir / f"{clip.stems[step.frame]}_tri.png", probs_to_png(probs))
                    bar.update(1)
                writer.flush()
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise out_of_memory(device, clip, options) from exc
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        raise out_of_memory(device, clip, options) from exc
    finally:
        writer.close()
        frames.close()
    elapsed = time.perf_counter() - start
    log.info("%d frames in %.1f s (%.2f frames/s) -> %s", total, elapsed, total / max(elapsed, 1e-9), result_dir)


def out_of_memory(device: torch.device, clip: Clip, options: PropagationOptions) -> UserError:
    where = "GPU" if device.type == "cuda" else "main"
    bound = f"--max_memory {options.max_memory}" if options.max_memory else "no --max_memory"
    return UserError(
        f"out of {where} memory while propagating {clip.path} (mem_every {options.mem_every}, {bound}). "
        "Bound the memory with --max_memory (e.g. 5) or a larger --mem_every, drop --naive, try "
        "--precision fp16 on a GPU, or downscale the frames (video.py extract --max_edge)"
    )


def write_conf_json(result_dir: Path, parts: list[Part], clip: Clip) -> None:
    """conf.json: one dict per part, ``{stem: 1 - i / part_length}`` in visiting order."""
    conf = [{clip.stems[f]: weight for f, weight in zip(part.frames, part_confidence(part))} for part in parts]
    atomic_write_json(result_dir / "conf.json", conf)
