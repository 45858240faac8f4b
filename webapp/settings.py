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
from utils.io import atomic_write_text

SETTINGS_DIR = "settings"  # under the save folder's .app/: <clip>.json
ESTIMATES_DIR = "estimates"  # under .app/: what tgm.py workspace --estimate measured, per clip and settings
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
HD_SHORTER_SIDE = 720  # a clip whose shorter side exceeds this gets the recommended internal size
RECOMMENDED_INTERNAL_SIZE = 720  # docs/video-and-hd.md: labels 98% the full size's at 1080p, 2.9x faster (CPU)
CPU_SHORTER_SIDE = 480  # without a GPU, frames whose shorter side exceeds this are propagated at it
LONG_CLIP_FRAMES = 200  # from this length on a memory limit keeps the memory flat
RECOMMENDED_MAX_MEMORY = 8
LIMITS = {"max_internal_size": 16384, "max_memory": 10000}  # far beyond any frame or clip; keeps nonsense out
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
    return flags


@dataclass(frozen=True)
class Machine:
    """What the recommendation needs to know of this machine."""

    gpu: str | None  # "cuda" or "mps" when one is there

    @classmethod
    def here(cls) -> Machine:
        import torch  # the app has it loaded already (its views use the model's constants); asked once per call

        if torch.cuda.is_available():
            return cls("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return cls("mps")
        return cls(None)


def recommend(
    frames: int, height: int, width: int, machine: Machine, measured: dict | None = None
) -> tuple[RunSettings, dict[str, str]]:
    """Settings proposed for a clip of ``frames`` frames of ``height`` x ``width`` on ``machine``, and for
    each setting that differs from the published computation, what it trades. The computation path is
    measured, not guessed: ``tune`` is proposed, and ``measured`` (the clip's latest measurement on
    this machine, ``pipeline/tune.py``'s JSON) says what it found."""
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
        notes["max_internal_size"] = (
            f"frames are {width}x{height} and there is no GPU: propagated with the shorter side at "
            f"{CPU_SHORTER_SIDE} px, trimaps scaled back; 2.7x faster at 720p and 6.9x at 1080p on a CPU, labels "
            "98% and 96% the full size's (docs/video-and-hd.md); full size for a final pass where the band must "
            "hug hair"
        )
    elif min(height, width) > HD_SHORTER_SIDE:
        values["max_internal_size"] = RECOMMENDED_INTERNAL_SIZE
        notes["max_internal_size"] = (
            f"frames are {width}x{height}: propagated with the shorter side at {RECOMMENDED_INTERNAL_SIZE} px, "
            "trimaps scaled back; about 3x faster at 1080p, the unknown band a little less tight "
            "(docs/video-and-hd.md); full size for a final pass where the band must hug hair"
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
}


def estimate_path(app_dir: Path, clip: str, settings: RunSettings) -> Path:
    """Where the estimate of ``clip``'s run with ``settings`` goes (``tgm.py workspace --estimate``): one file
    per clip and settings, so that an estimate is never shown for other settings than it measured."""
    key = json.dumps([clip, asdict(settings)], sort_keys=True).encode()
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
        if self.folder.is_symlink():
            raise UserError(f"{self.folder} is a link; the app keeps its settings in a folder of its own: remove it")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(clip), json.dumps(asdict(settings), indent=1) + "\n")
