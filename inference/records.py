"""What a part was computed from, so that a rerun recomputes only the parts whose inputs changed.

A part's output depends on: its frames (in visiting order, by content), its fixed keyframes
(their frames and their trimaps, by content: both are in the memory) and the dilation they are
read with, the network's weights, how it propagates (memory interval, max_memory, precision,
path), the kind of device and this code's output version. The fingerprint is a hash of all of them;
``part<k>/inputs.json`` keeps it with its ingredients (readable: why was this part recomputed?).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dataset.clip import Clip, file_digest
from inference.options import PropagationOptions
from inference.plan import Part

# Bump when a change of the code changes the bytes a part is written with: old parts are then
# recomputed instead of reused.
# 2: the fixed keyframes' frames are ingredients too (their RGB is in the memory); 3: the read beyond
# its budget is torch's fused attention (it rounds unlike the loop before it), so parts computed
# before are computed again rather than mixed with new ones.
OUTPUT_VERSION = 3


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of the network's weights (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def device_description(device: torch.device) -> str:
    """The kind of device: its rounding differs between kinds (and GPU models) by more than float
    noise. The CPU thread count is left out: it moves a probability by at most a level on a few
    pixels, and a torchrun job resumed by one process should not redo its work for that."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


@dataclass(frozen=True)
class RunInputs:
    """What every part of one run shares: the weights, the options, the device."""

    weights: str
    options: dict
    device: str

    @classmethod
    def of(cls, model: torch.nn.Module, options: PropagationOptions, keep_every: int, device: torch.device):
        described = {
            "keep_every": keep_every, "max_memory": options.max_memory, "precision": options.precision,
            "naive": options.naive, "fast": options.fast, "compile": options.compile,
        }  # fmt: skip
        if options.max_internal_size:  # only when set: parts computed before the option existed stay valid
            described["max_internal_size"] = options.max_internal_size
        return cls(weights_digest(model), described, device_description(device))


class PartRecords:
    """Fingerprints of a clip's parts; frame and trimap files are hashed once each."""

    def __init__(self, clip: Clip, run: RunInputs) -> None:
        self.clip = clip
        self.run = run
        self._digests: dict[Path | tuple[str, int], str] = {}

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def _frame_digest(self, index: int) -> str:
        key = ("frame", index)
        if key not in self._digests:
            self._digests[key] = self.clip.frame_digest(index)
        return self._digests[key]

    def record(self, part: Part) -> dict:
        """The ingredients of a part's output and their fingerprint (``record["fingerprint"]``)."""
        clip = self.clip
        ingredients = {
            "version": OUTPUT_VERSION,
            "frames": [[clip.stems[f], self._frame_digest(f)] for f in part.frames],
            "keyframes": [
                [clip.stems[k], self._frame_digest(k), self._digest(clip.trimap_path(k))] for k in part.fixed
            ],
            "dilation": clip.dilation,
            "weights": self.run.weights,
            "options": self.run.options,
            "device": self.run.device,
        }
        text = json.dumps(ingredients, sort_keys=True)
        return {"fingerprint": hashlib.sha256(text.encode()).hexdigest(), **ingredients}
