"""Inference-only rewrites of the STM: batch norm folded into the convolutions before it.

At inference the network is always in eval mode, so every frozen batch norm is an affine map per
channel, ``y = (x - mean) / sqrt(var + eps) * weight + bias``, and the convolution before it can
absorb it: ``W' = W * s`` and ``b' = b * s + (bias - mean * s)`` with ``s = weight / sqrt(var + eps)``.
The result is the same function up to float rounding, with one pass over the activations fewer per
batch norm. Training keeps the batch norms (they are part of the graph there).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from model.resnet import Bottleneck
from model.stm import STM, MemoryEncoder, _TrunkEncoder


@torch.no_grad()
def _absorb(convs: list[nn.Conv2d], bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into convolutions whose outputs are summed before it (the bias goes to the first)."""
    # in float64, so that the folded weights carry no rounding of their own
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    for i, conv in enumerate(convs):
        dtype = conv.weight.dtype
        conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
        bias = conv.bias.double() * scale if conv.bias is not None else torch.zeros_like(shift)
        if i == 0:
            bias = bias + shift
        conv.bias = nn.Parameter(bias.to(dtype))


def fold_batch_norms(model: STM) -> STM:
    """A copy of ``model`` (eval mode) with every batch norm folded into its convolution(s)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, Bottleneck):
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                _absorb([getattr(module, conv)], getattr(module, bn))
                setattr(module, bn, nn.Identity())
            if module.downsample is not None:
                _absorb([module.downsample[0]], module.downsample[1])
                module.downsample[1] = nn.Identity()
        elif isinstance(module, _TrunkEncoder):
            convs = [module.conv1]
            if isinstance(module, MemoryEncoder):  # bn1 sees conv1(frame) + conv1_m(mask) + conv1_o(others)
                convs += [module.conv1_m, module.conv1_o]
            _absorb(convs, module.bn1)
            module.bn1 = nn.Identity()
    return model
