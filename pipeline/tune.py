"""The fastest faithful path for a clip on this machine, measured on the clip's own frames (``tgm.py tune``).

Each candidate path (the default; ``--fast``; ``--fast`` with each reduced precision the device computes
natively; ``--compile`` where the clip is long enough for a compile to repay itself; on a GPU one query
frame at a time against the device's batch) propagates the same short part off the clip's first keyframe,
as a run steps it: warm-up steps apart, then the median seconds of a visit (the mean over whole batches
where query frames go in batches). Its probabilities on those frames are compared with the fp32
default's: the share of equal labels and the largest probability difference. The choice is the candidate
whose whole propagation of this clip (its visits times its seconds, plus what it spends once: compiling)
is shortest among those that agree with fp32 on at least 99.9% of the labels; a candidate below that is
shown and not chosen. The internal size is never chosen (it changes the method): the chosen path is also
timed at each internal size the app offers, so the trade is visible.

A measurement is kept per machine, device, frame size, checkpoint and the run's other flags
(:func:`tune_key`), under ``<save>/tune/``, so it runs once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dataset.clip import Clip, check_sizes
from inference.driver import configure_model, make_propagator
from inference.options import PropagationOptions
from inference.plan import Part, plan_parts
from inference.propagator import probs_to_image
from model.checkpoint import load_checkpoint
from model.stm import STM
from model.weights import trainable_random_init
from utils.device import machine_description
from utils.errors import UserError
from utils.io import atomic_write_json, file_digest_once, private_subfolder
from utils.precision import cpu_has_fast_bf16

log = logging.getLogger(__name__)

AGREEMENT_NEEDED = 0.999  # share of labels a candidate must keep of the fp32 default's to be chosen
COMPILE_WORTH_TRYING_S = 300.0  # compile only where the best eager path would propagate this long
OFFERED_SIZES = (0, 720, 480)  # the internal sizes the app offers (0: full size)
TUNE_VERSION = 1  # bumped when the measurement changes, so that older ones are measured again
TUNE_DIR = "tune"


@dataclass
class TuneRow:
    """One measured path: its flags, seconds per segment visit, what it spends once (compiling, autotuning:
    its first steps beyond the steady ones), its agreement with the fp32 default (None for a size row)."""

    flags: list[str]
    seconds_per_visit: float
    agreement: float | None
    max_diff: float | None
    once_seconds: float = 0.0
    kind: str = "candidate"  # candidate, or size: the chosen path at another internal size (never chosen)
    note: str = ""

    def run_seconds(self, visits: int) -> float:
        return self.once_seconds + visits * self.seconds_per_visit


@dataclass
class TuneResult:
    """The rows, the choice (flags) and what it buys over the default on this clip."""

    choice: list[str]
    rows: list[TuneRow]
    device: str
    machine: str
    frame_size: tuple[int, int]
    working_size: tuple[int, int]
    clip_visits: int
    checkpoint: str
    checkpoint_name: str  # the file's name, or "random weights"
    key: str
    measured: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M"))

    def row(self, flags: list[str]) -> TuneRow:
        return next(r for r in self.rows if r.flags == flags and r.kind == "candidate")

    @property
    def speedup(self) -> float:
        """The default's propagation of this clip over the choice's."""
        default, chosen = self.row([]), self.row(self.choice)
        return default.run_seconds(self.clip_visits) / max(chosen.run_seconds(self.clip_visits), 1e-9)

    def summary(self) -> str:
        """``--fast --precision bf16, 2.4x the default, 99.98% of labels`` (measured here)."""
        chosen = self.row(self.choice)
        flags = " ".join(self.choice) or "the default"
        return f"{flags}, {self.speedup:.1f}x the default, {chosen.agreement:.2%} of labels"

    def expected_seconds(self) -> float:
        return self.row(self.choice).run_seconds(self.clip_visits)

    def as_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["speedup"] = self.speedup
        data["summary"] = self.summary()
        return data

    @classmethod
    def from_json(cls, data: dict) -> TuneResult:
        rows = [TuneRow(**r) for r in data["rows"]]
        names = {f.name for f in dataclasses.fields(cls)} - {"rows"}
        values = {k: v for k, v in data.items() if k in names}
        values["frame_size"], values["working_size"] = tuple(values["frame_size"]), tuple(values["working_size"])
        return cls(rows=rows, **values)

    def table(self) -> str:
        """The rows as a person reads them."""
        lines = [f"{'path':<40}{'s/visit':>9}{'run s':>9}{'x default':>10}{'labels':>10}{'max dP':>8}  note"]
        default = self.row([]).run_seconds(self.clip_visits)
        for r in self.rows:
            name = " ".join(r.flags) or "default (fp32)"
            mark = "*" if r.kind == "candidate" and r.flags == self.choice else " "
            agree = "-" if r.agreement is None else f"{r.agreement:.3%}"
            diff = "-" if r.max_diff is None else f"{r.max_diff:.3f}"
            run = r.run_seconds(self.clip_visits)
            lines.append(f"{mark}{name:<39}{r.seconds_per_visit:>9.2f}{run:>9.0f}{default / run:>10.2f}{agree:>10}"
                         f"{diff:>8}  {r.note}")  # fmt: skip
        return "\n".join(lines)


def path_flags(options: PropagationOptions) -> list[str]:
    """The computation-path flags of ``options`` (what tune chooses between)."""
    flags = ["--fast"] if options.fast else []
    if options.precision != "fp32":
        flags += ["--precision", options.precision]
    if options.compile:
        flags.append("--compile")
    if options.query_batch:
        flags += ["--query_batch", str(options.query_batch)]
    return flags


def with_path(options: PropagationOptions, flags: list[str]) -> PropagationOptions:
    """``options`` with its computation path replaced by ``flags`` (the other flags kept)."""
    values = {"fast": "--fast" in flags, "compile": "--compile" in flags, "naive": False, "precision": "fp32",
              "query_batch": 0}  # fmt: skip
    if "--precision" in flags:
        values["precision"] = flags[flags.index("--precision") + 1]
    if "--query_batch" in flags:
        values["query_batch"] = int(flags[flags.index("--query_batch") + 1])
    return dataclasses.replace(options, **values)


def native_precisions(device: torch.device) -> list[str]:
    """The reduced precisions ``device`` computes natively: bf16 (CUDA sm80+, CPUs with AVX512-BF16 or
    AMX), fp16 (CUDA), tf32 (CUDA sm80+)."""
    if device.type == "cuda":
        ampere = torch.cuda.get_device_capability(device)[0] >= 8
        return [p for p, ok in (("bf16", ampere and torch.cuda.is_bf16_supported()), ("fp16", True),
                                ("tf32", ampere)) if ok]  # fmt: skip
    if device.type == "cpu" and cpu_has_fast_bf16():
        return ["bf16"]
    return []


def tune_key(
    machine: str, device: torch.device, frame_size, checkpoint: str, options: PropagationOptions, visits: int = 0
) -> str:
    """What a measurement depends on: the machine, the device, the frame size, the checkpoint, the
    run's flags beyond the path (internal size, memory schedule), the clip's visits (whether a
    compile repays itself) and this module's version."""
    rest = {k: v for k, v in dataclasses.asdict(options).items()
            if k not in ("fast", "compile", "naive", "precision", "query_batch", "recompute")}  # fmt: skip
    text = json.dumps([TUNE_VERSION, machine, str(device), list(frame_size), checkpoint, rest, visits], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def checkpoint_identity(checkpoint: Path | None) -> str:
    return f"sha256:{file_digest_once(checkpoint)}" if checkpoint is not None else "random weights"


def cached(save: Path | None, key: str) -> TuneResult | None:
    """An earlier measurement with this key under ``save``/tune/, or None."""
    if save is None:
        return None
    path = save / TUNE_DIR / f"{key}.json"
    try:
        return TuneResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep(save: Path, result: TuneResult, clip_name: str | None = None) -> Path:
    """Write ``result`` under ``save``/tune/ by its key (and as the clip's latest, for the app)."""
    folder = private_subfolder(save, TUNE_DIR)  # the app's jobs write here: never through a planted link
    path = folder / f"{result.key}.json"
    atomic_write_json(path, result.as_json())
    if clip_name is not None:
        atomic_write_json(folder / f"latest-{hashlib.sha256(clip_name.encode()).hexdigest()[:16]}.json",
                          {"clip": clip_name, **result.as_json()})  # fmt: skip
    return path


def latest_path(save: Path, clip_name: str) -> Path:
    return save / TUNE_DIR / f"latest-{hashlib.sha256(clip_name.encode()).hexdigest()[:16]}.json"


def load_weights(checkpoint: Path | None) -> STM:
    """The network on the CPU, eval mode: the checkpoint's weights, or the random start finetuning uses."""
    model = STM()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    else:
        torch.manual_seed(0)
        trainable_random_init(model)
    return model.eval()


def tune_clip(
    clip: Clip,
    checkpoint: Path | None,
    options: PropagationOptions,
    device: torch.device,
    save: Path | None = None,
    visits: int = 3,
    remeasure: bool = False,
) -> TuneResult:
    """Measure (or take from ``save``/tune/) the fastest faithful path for ``clip`` with ``checkpoint``
    (None: random weights) on ``device``; ``options`` holds the run's other flags."""
    height, width = check_sizes(clip)
    machine = machine_description(device)
    clip_visits = sum(len(part) - 1 for part in plan_parts(clip.keyframe_indices, len(clip)))
    key = tune_key(machine, device, (height, width), checkpoint_identity(checkpoint), options, clip_visits)
    if not remeasure and (found := cached(save, key)) is not None:
        log.info("%s: tuned earlier on this machine: %s (%s)", clip.name, found.summary(), save / TUNE_DIR)
        return found
    base = load_weights(checkpoint)
    frames = probe_frames(clip, visits + 1 + max(0, batch_of(options, device, clip) - 1) * 2)  # warm-up + timed
    log.info("%s: measuring paths on %d of its frames (%s)", clip.name, len(frames), device)
    measure = Measurer(base, clip, frames, device)
    reference = measure(options, [])
    rows = [reference]
    for flags in [["--fast"], *(["--fast", "--precision", p] for p in native_precisions(device))]:
        rows.append(measure(options, flags))
    best = choose(rows, clip_visits)
    if best.run_seconds(clip_visits) >= COMPILE_WORTH_TRYING_S:
        rows.append(measure(options, [*best.flags, "--compile"] if "--fast" in best.flags else ["--fast", "--compile"]))
    best = choose(rows, clip_visits)
    if device.type == "cuda" and batch_of(with_path(options, best.flags), device, clip) > 1:
        rows.append(measure(options, [*best.flags, "--query_batch", "1"]))
        best = choose(rows, clip_visits)
    for row in rows:
        if row.agreement is not None and row.agreement < AGREEMENT_NEEDED:
            row.note = f"labels under {AGREEMENT_NEEDED:.1%} of fp32's: not chosen"
    shorter = min(height, width)
    for size in OFFERED_SIZES:
        if size != (options.max_internal_size or 0) and (size == 0 or size < shorter):
            sized = dataclasses.replace(options, max_internal_size=size)
            row = measure(sized, best.flags, compare=False)
            row.flags = [*best.flags, f"--max_internal_size={size}"]
            row.kind, row.note = "size", "the internal size is yours to choose: it changes the method"
            rows.append(row)
    working = options.working_size(height, width)
    name = checkpoint.name if checkpoint else "random weights"
    return TuneResult(best.flags, rows, str(device), machine, (height, width), working, clip_visits,
                      checkpoint_identity(checkpoint), name, key)  # fmt: skip


def choose(rows: list[TuneRow], clip_visits: int) -> TuneRow:
    """The candidate that propagates the clip soonest among those agreeing enough with fp32."""
    faithful = [r for r in rows if r.kind == "candidate" and (r.agreement or 0) >= AGREEMENT_NEEDED]
    return min(faithful, key=lambda r: r.run_seconds(clip_visits))


def batch_of(options: PropagationOptions, device: torch.device, clip: Clip) -> int:
    return options.query_batch_for(device, *options.working_size(*check_sizes(clip)))


def probe_frames(clip: Clip, steps: int) -> tuple[int, ...]:
    """The first keyframe and up to ``steps`` frames after it (before it, where more lie there)."""
    first = clip.keyframe_indices[0]
    ahead = list(range(first, min(len(clip), first + steps + 1)))
    behind = list(range(first, max(-1, first - steps - 1), -1))
    frames = ahead if len(ahead) >= len(behind) else behind
    if len(frames) < 3:
        raise UserError(f"{clip.path}: too few frames beside keyframe {clip.stems[first]} to time a path (3 needed)")
    return tuple(frames)


class Measurer:
    """Propagates the probe part with one path after another and compares each with the first's
    probabilities (the fp32 default's)."""

    def __init__(self, base: STM, clip: Clip, frames: tuple[int, ...], device: torch.device) -> None:
        self.base, self.clip, self.frames, self.device = base, clip, frames, device
        self.reference: list[np.ndarray] | None = None

    def __call__(self, options: PropagationOptions, flags: list[str], compare: bool = True) -> TuneRow:
        run_options = with_path(options, flags)
        model = configure_model(copy.deepcopy(self.base), run_options, self.device)
        seconds, images = self._probe(model, run_options)
        del model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        batch = batch_of(run_options, self.device, self.clip)
        # seconds[0]: the part's start (its keyframe memorised); then a visit each. The first visits
        # hold what is paid once: compiling, autotuning, the first batch.
        warm = 1 + max(1, batch)
        steady = seconds[warm:] or seconds[-1:]
        per_visit = statistics.fmean(steady) if batch > 1 else statistics.median(steady)
        once = max(0.0, sum(seconds[:warm]) - (warm - 1) * per_visit)
        agreement = diff = None
        if compare:
            if self.reference is None:
                self.reference, agreement, diff = images, 1.0, 0.0
            else:
                agreement, diff = probability_agreement(images, self.reference)
        label = " ".join(flags) or "default"
        log.info("  %s: %.2f s a visit%s", label, per_visit, "" if agreement is None else f", labels {agreement:.3%}")
        return TuneRow(flags, per_visit, agreement, diff, once)

    def _probe(self, model: STM, options: PropagationOptions) -> tuple[list[float], list[np.ndarray]]:
        clip = self.clip
        height, width = check_sizes(clip)
        working = options.working_size(height, width)
        propagator = make_propagator(model, clip, options, options.keep_every(len(clip)), self.device)
        seconds, device_probs = [], []
        try:
            steps = propagator.run_part(Part(self.frames, (self.frames[0],)))
            while True:
                start = time.perf_counter()
                step = next(steps, None)
                if step is None:
                    break
                probs = step.probs.float().cpu()  # waits for the device
                seconds.append(time.perf_counter() - start)
                if step.local_index > 0:
                    device_probs.append(probs)
        finally:
            propagator.frames.close()
        images = [probs_to_image(p, *working, frame_size=(height, width)) for p in device_probs]
        return seconds, images


def probability_agreement(images: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """(the share of pixels whose labels agree, the largest probability difference) over the frames."""
    agree = float(np.mean([(a.argmax(2) == b.argmax(2)).mean() for a, b in zip(images, reference)]))
    return agree, float(max(np.abs(a - b).max() for a, b in zip(images, reference)))
