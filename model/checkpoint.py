"""Loading and saving STM checkpoints.

Accepted: a plain state dict with the published names, the same with ``module.`` prefixes
(saved from DataParallel, e.g. the original STM release), or a dict holding ``state_dict``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from utils.errors import UserError
from utils.io import atomic_torch_save

log = logging.getLogger(__name__)

# Old checkpoints (PyTorch < 0.4.1) have no BatchNorm step counters; they are unused in eval mode.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


@dataclass
class LoadReport:
    """What a checkpoint had compared with the model (names)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "name: checkpoint shape != model shape"


def _names(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def read_torch_file(path: str | Path, what: str = "checkpoint") -> object:
    """torch.load on the CPU with a UserError for a missing or non-torch file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage makes the unpickler raise almost anything
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{what} {path} is not a readable PyTorch file ({first_line}); pass a .pth/.pth.tar saved with torch.save"
        ) from exc


def extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint, with any ``module.`` prefix removed."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"checkpoint {path} holds no state dict of tensors (found {type(obj).__name__}); "
            "pass an STM checkpoint such as trimap_ep150.pth or one written by online_finetune_test.py"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def compare_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    expected = model.state_dict()
    report = LoadReport()
    for name, tensor in expected.items():
        if name not in state:
            if not name.endswith(_OPTIONAL_SUFFIXES):
                report.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            report.mismatched.append(f"{name}: {tuple(state[name].shape)} != {tuple(tensor.shape)}")
    report.unexpected = [name for name in state if name not in expected]
    return report


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load weights into ``model``; refuse (UserError) if any tensor is missing or mis-shaped.

    Unexpected tensors are logged by name and ignored.
    """
    path = Path(path)
    state = extract_state_dict(read_torch_file(path), path)
    report = compare_state_dict(model, state)
    if report.missing or report.mismatched:
        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} tensors missing ({_names(report.missing)})")
        if report.mismatched:
            parts.append(f"{len(report.mismatched)} of another shape ({_names(report.mismatched, 4)})")
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} unexpected ({_names(report.unexpected)})")
        raise UserError(
            f"checkpoint {path} does not fit this STM network: {'; '.join(parts)}. "
            "Pass a TCVOM/STM checkpoint (e.g. trimap_ep150.pth) or one written by online_finetune_test.py"
        )
    if report.unexpected:
        log.warning(
            "checkpoint %s: ignoring %d unexpected tensors (%s)",
            path,
            len(report.unexpected),
            _names(report.unexpected),
        )
    known = {k: v for k, v in state.items() if k not in report.unexpected}
    model.load_state_dict(known, strict=False)
    log.info("loaded %s (%d tensors)", path, len(known))
    return report


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Save the plain STM state dict (CPU tensors), atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(state, Path(path))
