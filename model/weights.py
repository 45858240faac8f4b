"""Weights without downloads: the parity rule and the demo's trainable random start.

No pretrained weights can be fetched at run time, so tests, benchmarks and the demo build their
own. ``parity_weights`` follows the documented rule of the shared parity case: each tensor is drawn
from its own generator seeded by the CRC32 of its state-dict name, so any implementation with the
same names and shapes gets bit-identical tensors.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from model.stm import IMAGENET_MEAN, IMAGENET_STD


def _parity_gain(name: str) -> float:
    # Loud mask convolutions and prediction head make outputs depend strongly on the masks.
    if "conv1_m" in name or "conv1_o" in name:
        return 60.0
    if "pred2" in name:
        return 8.0
    return 0.8


def parity_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The parity rule for one tensor (see module docstring)."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if dtype == torch.int64:  # BatchNorm num_batches_tracked
        return torch.zeros(shape, dtype=torch.int64)
    if leaf == "mean":
        return torch.tensor(IMAGENET_MEAN).view(shape)
    if leaf == "std":
        return torch.tensor(IMAGENET_STD).view(shape)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=generator)
    if leaf == "running_var":
        return 1.0 + 0.5 * torch.rand(shape, generator=generator)
    if leaf == "bias":
        return 0.05 * torch.randn(shape, generator=generator)
    if leaf == "weight" and len(shape) == 1:  # BatchNorm scale
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) * (_parity_gain(name) / math.sqrt(fan_in))


def parity_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parity weights for every tensor of ``model.state_dict()``."""
    return {name: parity_tensor(name, tuple(tensor.shape), tensor.dtype) for name, tensor in model.state_dict().items()}


def trainable_random_init(model: nn.Module, residual_scale: float = 0.1, mask_gain: float = 10.0) -> None:
    """A random start that finetuning can learn from with frozen batch norm.

    - PyTorch's default initialisation with batch norm frozen at identity statistics makes the
      50-layer residual trunks explode, and Adam then diverges. Scaling the last batch norm of
      every bottleneck (``bn3``) to ``residual_scale`` makes each residual branch start small, so
      activations stay bounded through the trunk.
    - The memory encoder sees the frame doubly normalised (values up to about +-10) but the masks
      in [0, 1]: with default weights the masks barely change the memory, and the network learns
      where the object is but never tells foreground from unknown. Scaling ``conv1_m`` and
      ``conv1_o`` by ``mask_gain`` balances the two.

    Seed torch before building the model for a repeatable start.
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d) and name.endswith("bn3"):
                module.weight.fill_(residual_scale)
            elif name.endswith(("conv1_m", "conv1_o")):
                module.weight.mul_(mask_gain)
