"""The ResNet-50 trunk (stem and layer1-3), with torchvision's module and parameter names.

Written here so that the project needs no torchvision: a torchvision ``resnet50`` state dict
(without ``layer4`` and ``fc``) loads into :class:`ResNet50Trunk` as it is.
"""

from __future__ import annotations

import torch
from torch import nn

# Bottleneck blocks per stage of ResNet-50; layer4 is not used by the STM encoders.
RESNET50_BLOCKS = (3, 4, 6)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1 -> 3x3 (carries the stride) -> 1x1, times 4 channels."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage (torchvision's ``_make_layer``): the first block changes stride/width."""
    layers = [Bottleneck(inplanes, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50Trunk(nn.Module):
    """Stem (conv1, bn1, relu, maxpool) and layer1-3 of ResNet-50.

    Strides: layer1 -> 4 (256 ch), layer2 -> 8 (512 ch), layer3 -> 16 (1024 ch).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_stage(64, 64, RESNET50_BLOCKS[0], stride=1)
        self.layer2 = make_stage(256, 128, RESNET50_BLOCKS[1], stride=2)
        self.layer3 = make_stage(512, 256, RESNET50_BLOCKS[2], stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))
