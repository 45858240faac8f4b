"""A clip's run settings in the app: the speed and memory flags of ``tgm.py workspace``, chosen in the page,
remembered per clip in the save folder, with defaults proposed from the clip and the machine.

Flask-free like ``webapp/workspace.py``: the routes read and write through :class:`SettingsStore`, and
``webapp/server.py::commands_for`` turns the saved settings into the job's flags (:func:`workspace_flags`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from utils.errors import UserError
from utils.io import atomic_write_text, private_subfolder

SETTINGS_DIR = "settings"  # under the save folder's .app/: <clip>.json
ESTIMATES_DIR = "estimates"  # under .app/: what tgm.py workspace --estimate measured, per clip and settings
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
HD_SHORTER_SIDE = 720  # a clip whose shorter side exceeds this gets the recommended internal size
RECOMMENDED_INTERNAL_SIZE = 720  # docs/video-and-hd.md: labels 98% the full size's at 1080p, 2.9x faster (CPU)
CPU_SHORTER_SIDE = 480  # without a GPU, frames whose shorter side exceeds this are propagated at it
LONG_CLIP_FRAMES = 200  # from this length on a memory limit keeps the memory flat
RECOMMENDED_MAX_MEMORY = 8
LIMITS = {"max_internal_size": 16384, "max_memory": 10000, "finetune_steps": 100000, "finetune_crop": 4096}
SCHEDULES = ("", "const", "poly")
RANDOM_START_LR = (
    1e-4  # what a finetuning from random weights needs (docs/finetuning.md); 1e-6 is the released weights'
)
CPU_FINETUNE_STEPS, CPU_FINETUNE_CROP = 100, 320  # on a CPU: minutes rather than hours (the estimate says how long)
MAX_FILE_BYTES = 64 << 10
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")


@dataclass(frozen=True)
class RunSettings:
    """The flags of a propagation job (``tgm.py workspace``): the published computation when all are off."""

    device: str = "auto"
    fast: bool = False
    precision: str = "fp32"
    max_internal_size: int = 0  # 0: full size
    max_memory: int = 0  # 0: no limit
    discard_parts: bool = False
    tune: bool = False  # measure the fastest faithful path before propagating; fast and precision are then its choice
    finetune_steps: int = 0  # 0: the config's TRAIN.TOTAL_STEPS
    finetune_crop: int = 0  # training crops, pixels a side; 0: the config's TRAIN.TRAIN_INPUT_SIZE
    finetune_lr: float = 0.0  # 0: the config's TRAIN.BASE_LR
    finetune_schedule: str = ""  # const, poly (decaying to 0) or "": the config's TRAIN.LR_STRATEGY
    frames: str = ""  # "FIRST-LAST": an in/out range of the clip (a video's frame numbers); "": every frame

    @classmethod
    def from_json(cls, data: object, where: str) -> RunSettings:
        """Checked settings from a request body or a saved file; UserError naming ``where`` and the key."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict):
            raise UserError(f"{where}: settings must be an object with the keys {', '.join(names)}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UserError(f"{where}: unknown setting {unknown[0]!r}; the settings are {', '.join(names)}")
        values = asdict(cls())
        values.update(data)
        for name in ("fast", "discard_parts", "tune"):
            if not isinstance(values[name], bool):
                raise UserError(f"{where}: {name} must be true or false")
        for name, most in LIMITS.items():
            if isinstance(values[name], bool) or not isinstance(values[name], int) or not 0 <= values[name] <= most:
                raise UserError(f"{where}: {name} must be a whole number from 0 (off) to {most}")
        if 0 < values["max_internal_size"] < 64:
            raise UserError(f"{where}: max_internal_size must be 0 (full size) or at least 64 pixels")
        if values["max_memory"] == 1:
            raise UserError(f"{where}: max_memory must be 0 (no limit) or at least 2 (the previous frame and one more)")
        if values["precision"] not in PRECISIONS:
            raise UserError(f"{where}: precision must be one of {', '.join(PRECISIONS)}")
        rate = values["finetune_lr"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (rate == 0 or 0 < rate <= 0.1):
            raise UserError(f"{where}: finetune_lr must be 0 (the config's) or a learning rate above 0, at most 0.1")
        values["finetune_lr"] = float(rate)
        if 0 < values["finetune_crop"] < 64:
            raise UserError(f"{where}: finetune_crop must be 0 (the config's) or at least 64 pixels")
        if values["finetune_schedule"] not in SCHEDULES:
            raise UserError(f"{where}: finetune_schedule must be const, poly or empty (the config's)")
        if not isinstance(values["frames"], str) or not re.fullmatch(r"(\d{1,7})-(\d{1,7})|", values["frames"]):
            raise UserError(f"{where}: frames must be FIRST-LAST (frame numbers, e.g. 200-259) or empty for all")
        if values["frames"] and int(values["frames"].split("-")[0]) > int(values["frames"].split("-")[1]):
            raise UserError(f"{where}: frames {values['frames']}: the first frame comes after the last")
        device = values["device"]
        if not isinstance(device, str) or not DEVICE.fullmatch(device):
            raise UserError(f"{where}: device must be auto, cpu, cuda, cuda:N or mps")
        return cls(**values)


def workspace_flags(settings: RunSettings) -> list[str]:
    """The ``tgm.py workspace`` flags of these settings (none for the defaults)."""
    flags = [] if settings.device == "auto" else ["--device", settings.device]
    if settings.tune:
        flags.append("--tune")
    else:
        if settings.fast:
            flags.append("--fast")
        if settings.precision != "fp32":
            flags += ["--precision", settings.precision]
    if settings.max_internal_size:
        flags.append(f"--max_internal_size={settings.max_internal_size}")
    if settings.max_memory:
        flags.append(f"--max_memory={settings.max_memory}")
    if settings.discard_parts:
        flags.append("--discard_parts")
    return flags + finetune_overrides(settings)


def finetune_overrides(settings: RunSettings) -> list[str]:
    """The finetuning settings and the frame range as the trailing ``KEY VALUE`` config overrides
    ``tgm.py workspace`` takes (they come after every flag)."""
    overrides = ["DATASET.FRAMES", settings.frames] if settings.frames else []
    if settings.finetune_steps:
        overrides += ["TRAIN.TOTAL_STEPS", str(settings.finetune_steps)]
    if settings.finetune_crop:
        overrides += ["TRAIN.TRAIN_INPUT_SIZE", f"({settings.finetune_crop}, {settings.finetune_crop})"]
    if settings.finetune_lr:
        overrides += ["TRAIN.BASE_LR", repr(settings.finetune_lr)]
    if settings.finetune_schedule:
        overrides += ["TRAIN.LR_STRATEGY", settings.finetune_schedule]
    return overrides


@dataclass(frozen=True)
class Machine:
    """What the recommendation needs to know of this machine."""

    gpu: str | None  # "cuda" or "mps" when one is there
    cuda_devices: int = 0

    @classmethod
    def here(cls) -> Machine:
        import torch  # the app has it loaded already (its views use the model's constants); asked once per call

        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return cls("mps")
        return cls(None)

    def check_device(self, device: str) -> None:
        """UserError when this machine has no such device (a setting the job would only fail on)."""
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            if index >= self.cuda_devices:
                have = f"cuda:0 to cuda:{self.cuda_devices - 1}" if self.cuda_devices else "no CUDA GPU"
                raise UserError(f"device {device}: this machine has {have}; choose auto or cpu")
        elif device == "mps" and self.gpu != "mps":
            raise UserError("device mps: this machine has no Apple GPU; choose auto or cpu")


def recommend(
    frames: int, height: int, width: int, machine: Machine, measured: dict | None = None, start: str | None = None
) -> tuple[RunSettings, dict[str, str]]:
    """Settings proposed for a clip of ``frames`` frames of ``height`` x ``width`` on ``machine``, and for
    each setting that differs from the published computation, what it trades. The computation path is
    measured, not guessed: ``tune`` is proposed, and ``measured`` (the clip's latest measurement on
    this machine, ``pipeline/tune.py``'s JSON) says what it found. ``start``: what the finetuning starts
    from, "random" or "checkpoint" (None: no finetuning, the app propagates with --load)."""
    notes: dict[str, str] = {}
    values: dict[str, object] = {"tune": True}
    if measured is not None:
        notes["tune"] = (
            f"measured here: {measured['summary']} (with {measured['checkpoint_name']}); the run measures again "
            "with the checkpoint it propagates with"
        )
    else:
        notes["tune"] = (
            "the run first measures here which path is fastest for this clip with labels within 99.9% of fp32's "
            "(--fast, the precisions this machine computes natively, --compile on long clips); Estimate measures "
            "it too"
        )
    if machine.gpu is None and min(height, width) > CPU_SHORTER_SIDE:
        values["max_internal_size"] = CPU_SHORTER_SIDE
        # the measured row nearest this clip's size (docs/video-and-hd.md: 6-frame clips, a 2-vCPU Xeon)
        shorter = min(height, width)
        size, speed, labels = ("720p", "2.7x", "98%") if shorter <= HD_SHORTER_SIDE else ("1080p", "6.9x", "96%")
        nearest = "" if shorter in (720, 1080) else ", the nearest size measured"
        notes["max_internal_size"] = (
            f"frames are {width}x{height} and there is no GPU: propagated with the shorter side at "
            f"{CPU_SHORTER_SIDE} px, trimaps scaled back (at {size}{nearest}: {speed} faster on a CPU, labels {labels} "
            "the full size's; docs/video-and-hd.md); full size for a final pass where the band must hug hair"
        )
    elif min(height, width) > HD_SHORTER_SIDE:
        values["max_internal_size"] = RECOMMENDED_INTERNAL_SIZE
        notes["max_internal_size"] = (
            f"frames are {width}x{height}: propagated with the shorter side at {RECOMMENDED_INTERNAL_SIZE} px, "
            "trimaps scaled back; about 3x faster at 1080p, the unknown band a little less tight "
            "(docs/video-and-hd.md); full size for a final pass where the band must hug hair"
        )
    if start == "random":
        values["finetune_lr"], values["finetune_schedule"] = RANDOM_START_LR, "poly"
        notes["finetune_lr"] = (
            f"the network starts from RANDOM weights (no TRAIN.LOAD_CKPT): it learns your subject from the keyframes "
            f"alone, so expect rough trimaps away from them; that needs a learning rate of about {RANDOM_START_LR:g} "
            "decaying to 0 (the published 1e-6 is for the released weights, trimap_ep150.pth, which know what a "
            "subject is: set TRAIN.LOAD_CKPT to them for real footage)"
        )
    if start is not None and machine.gpu is None:
        crop = min(CPU_FINETUNE_CROP, height, width)
        crop = crop if crop >= 64 else 0  # frames this small: the config's crop (finetuning refuses a larger one)
        values["finetune_steps"], values["finetune_crop"] = CPU_FINETUNE_STEPS, crop
        notes["finetune_steps"] = (
            f"no GPU: {CPU_FINETUNE_STEPS} steps{f' at {crop} px crops' if crop else ''}, minutes on a CPU where the "
            "published 500 at 512 px take hours (Estimate says how long); more steps learn the subject better"
        )
    if frames >= LONG_CLIP_FRAMES:
        values["max_memory"] = RECOMMENDED_MAX_MEMORY
        notes["max_memory"] = (
            f"{frames} frames: the memory keeps the keyframes, the previous frame and at most "
            f"{RECOMMENDED_MAX_MEMORY - 1} more, so it stays flat however long a segment is; the published "
            "code keeps every 5th frame (slower and larger as a segment grows)"
        )
    return RunSettings(**values), notes


TRADES = {
    "device": "where the network runs: auto picks a GPU when there is one",
    "tune": "measure the paths on this clip first (a minute or two on a CPU, seconds on a GPU) and take the fastest "
    "whose labels stay within 99.9% of fp32's; off: fast and precision as set here",
    "fast": "faster (batch norms folded, channels-last); within rounding of the published computation",
    "precision": "bf16/fp16 compute in half precision where the device does so natively: faster, but labels move "
    "with the weights (tune measures how far); tf32 (NVIDIA GPUs from Ampere on) keeps fp32 tensors",
    "max_internal_size": "propagate at this shorter side (0: full size): much faster on HD, a slightly looser band",
    "max_memory": "memory entries kept (0: every 5th frame, growing): bounded memory and time on long clips",
    "discard_parts": "fuse each frame as soon as it is done and delete its part PNGs: bounded disk, no reuse on reruns",
    "finetune_steps": "finetuning steps (0: the config's): more learn the subject better and take longer",
    "finetune_crop": "finetuning crops, pixels a side (0: the config's): larger see more of the subject at once, "
    "cost more per step",
    "finetune_lr": "finetuning learning rate (0: the config's): about 1e-4 from random weights, 1e-6 from the "
    "released weights; too high unlearns, too low learns nothing",
    "finetune_schedule": "how the rate changes: const, or poly (down to 0 at the last step); empty: the config's",
    "frames": "FIRST-LAST: work on these frames of the clip only (a video's frame numbers); keyframes among them; "
    "empty: every frame",
}


def estimate_path(app_dir: Path, clip: str, settings: RunSettings, inputs: str = "") -> Path:
    """Where the estimate of ``clip``'s run with ``settings`` goes (``tgm.py workspace --estimate``): one file
    per clip, settings and ``inputs`` (what else the run reads: the config's contents, the checkpoint, the
    keyframes, the frames), so that an estimate is never shown for another run than it measured."""
    key = json.dumps([clip, asdict(settings), inputs], sort_keys=True).encode()
    return app_dir / ESTIMATES_DIR / f"{hashlib.sha256(key).hexdigest()[:24]}.json"


def read_estimate(path: Path, clip: str) -> dict | None:
    """The estimate a job wrote for ``clip`` (None: none yet, or unreadable: estimate again)."""
    try:
        raw = read_app_file(path, "estimate again")
        estimate = json.loads(raw).get(clip) if raw is not None else None
    except (UserError, ValueError, AttributeError):
        return None
    return estimate if isinstance(estimate, dict) else None


def read_tuned(save: Path, clip: str) -> dict | None:
    """The clip's latest path measurement (``pipeline/tune.py``'s JSON, written by a run or an estimate
    with --tune); None when there is none or it does not read."""
    from pipeline.tune import latest_path  # the file's name is spelled there

    try:
        raw = read_app_file(latest_path(save, clip), "measure again")
        data = json.loads(raw) if raw is not None else None
    except (UserError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("clip") == clip and "summary" in data else None


def read_app_file(path: Path, remedy: str) -> bytes | None:
    """One of the app's own small files (None when there is none). Only a regular file is read, not
    through a link, at most ``MAX_FILE_BYTES``; anything else is a UserError that ends with ``remedy``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{path} cannot be read as a settings file ({exc.strerror}); {remedy}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file; {remedy}")
    with os.fdopen(fd, "rb") as file:
        raw = file.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{path} is larger than a settings file can be; {remedy}")
    return raw


class SettingsStore:
    """Saved settings, one JSON file per clip in ``<save>/.app/settings/``."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir
        self.folder = app_dir / SETTINGS_DIR

    def path(self, clip: str) -> Path:
        """``<clip>.json``; a name too long for that (file names end at 255 bytes) by its digest."""
        if len(clip.encode()) > 200:
            return self.folder / f"{hashlib.sha256(clip.encode()).hexdigest()}.json"
        return self.folder / f"{clip}.json"

    def load(self, clip: str) -> RunSettings | None:
        """The saved settings (None: none saved). Only a regular file is read, not through a link, at most
        ``MAX_FILE_BYTES``; anything else is a UserError that says to delete it."""
        path = self.path(clip)
        remedy = "delete it to start from the proposed settings"
        raw = read_app_file(path, remedy)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); {remedy}") from exc
        return RunSettings.from_json(data, str(path))

    def save(self, clip: str, settings: RunSettings) -> None:
        folder = private_subfolder(self.app_dir.parent, self.app_dir.name, SETTINGS_DIR)  # never through a link
        atomic_write_text(folder / self.path(clip).name, json.dumps(asdict(settings), indent=1) + "\n")
