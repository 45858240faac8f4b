"""Loading and saving STM checkpoints.

Accepted: a plain state dict with the published names, the same with ``module.`` prefixes
(saved from DataParallel, e.g. the original STM release), or a dict holding ``state_dict``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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


# Loading a pickle runs the constructors it names. Tensors and plain containers are always safe
# (torch's weights_only loader); these other types, common in research checkpoints next to the
# weights (the training arguments, numpy scalars and arrays), construct data and nothing else.
TRUST_ENV = "TRIMAP_TRUST_CHECKPOINTS"
HARMLESS_GLOBALS = {
    "argparse.Namespace": lambda: argparse.Namespace,
    "numpy.dtype": lambda: np.dtype,
    "numpy.ndarray": lambda: np.ndarray,
    "numpy._core.multiarray.scalar": lambda: importlib.import_module("numpy._core.multiarray").scalar,
    "numpy.core.multiarray.scalar": lambda: importlib.import_module("numpy._core.multiarray").scalar,
    "numpy._core.multiarray._reconstruct": lambda: importlib.import_module("numpy._core.multiarray")._reconstruct,
    "numpy.core.multiarray._reconstruct": lambda: importlib.import_module("numpy._core.multiarray")._reconstruct,
    "torch.torch_version.TorchVersion": lambda: torch.torch_version.TorchVersion,
}


def _harmless(name: str) -> bool:
    return name in HARMLESS_GLOBALS or (name.startswith("numpy.dtypes.") and name.endswith("DType"))


def _resolve(name: str) -> object:
    if name in HARMLESS_GLOBALS:
        return HARMLESS_GLOBALS[name]()
    return getattr(np.dtypes, name.rsplit(".", 1)[1])


def _unreadable(path: Path, what: str, exc: BaseException) -> UserError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"{what} {path} is not a readable PyTorch file ({first_line}); pass a .pth/.pth.tar saved with torch.save"
    )


def read_torch_file(path: str | Path, what: str = "checkpoint") -> object:
    """torch.load on the CPU, safely: tensors, containers and harmless objects (HARMLESS_GLOBALS).

    A file that pickles other objects is refused with their type names unless the user trusts it
    (environment variable TRIMAP_TRUST_CHECKPOINTS=1). UserError for a missing or non-torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _unreadable(path, what, exc) from exc
    except Exception as exc:  # garbage makes the unpickler raise almost anything
        raise _unreadable(path, what, exc) from exc
    return _read_with_objects(path, what)


def _read_with_objects(path: Path, what: str) -> object:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:
        raise _unreadable(path, what, exc) from exc
    unknown = [name for name in names if not _harmless(name)]
    if not unknown:
        # numpy's dtype classes are built inside np.dtype's pickle without being listed as globals
        dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
        with torch.serialization.safe_globals([_resolve(name) for name in names] + dtype_classes):
            return torch.load(path, map_location="cpu", weights_only=True)
    if os.environ.get(TRUST_ENV) == "1":
        log.warning("%s %s: loading with full unpickling (%s=1) for objects of types %s", what, path, TRUST_ENV,
                    ", ".join(unknown))  # fmt: skip
        return torch.load(path, map_location="cpu", weights_only=False)
    raise UserError(
        f"{what} {path} holds Python objects of types {', '.join(unknown)} besides the weights; loading them "
        f"would run code from the file. If you trust where it came from, run again with {TRUST_ENV}=1 in the "
        "environment (or save only its state_dict)"
    )


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
