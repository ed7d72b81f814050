"""CIFAR-style ResNets (He et al., CVPR 2016, section 4.2): 6n+2 layers, 16/32/64 channels.

Shortcuts that change shape use a 1x1 conv + BN (option B), so every channel join is a real
residual add the dependency graph must follow.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import InChannels, NumClasses, Width, register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a residual add."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def basic_stages(widths: list[int], blocks: int) -> list[nn.Sequential]:
    """One stage of `blocks` basic blocks per width, fed by a stem of `widths[0]` channels; every
    stage after the first halves the resolution in its first block."""
    stages, in_planes = [], widths[0]
    for stage, planes in enumerate(widths):
        stage_blocks = []
        for i in range(blocks):
            stage_blocks.append(BasicBlock(in_planes, planes, 2 if (stage > 0 and i == 0) else 1))
            in_planes = planes
        stages.append(nn.Sequential(*stage_blocks))
    return stages


def init_convs(model: nn.Module) -> None:
    """He initialisation (fan-out, ReLU) of every conv, as the ResNet paper's."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    """ResNet for small images: a 3x3 stem, three stages of n blocks, global pool, linear."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        widths = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1, self.layer2, self.layer3 = basic_stages(widths, (depth - 2) // 6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet20")
def resnet20(num_classes: NumClasses = 10, in_channels: InChannels = 3, width: Width = 1.0) -> CifarResNet:
    """ResNet-20 (n=3), 0.27M parameters at width 1."""
    return CifarResNet(20, num_classes, in_channels, width)


@register_model("resnet56")
def resnet56(num_classes: NumClasses = 10, in_channels: InChannels = 3, width: Width = 1.0) -> CifarResNet:
    """ResNet-56 (n=9), 0.85M parameters at width 1."""
    return CifarResNet(56, num_classes, in_channels, width)


class ResNet18(nn.Module):
    """ResNet-18 in torchvision's layout (He et al., table 1): a 7x7 stride-2 stem and a 3x3
    stride-2 max-pool, four stages of two basic blocks at 64/128/256/512 channels, pool, linear."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1, self.layer2, self.layer3, self.layer4 = basic_stages(widths, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet18")
def resnet18(num_classes: NumClasses = 10, in_channels: InChannels = 3, width: Width = 1.0) -> ResNet18:
    """ResNet-18 (torchvision's layout), 11.2M parameters at width 1 and 10 classes; for inputs of
    64 px and more (the stem and max-pool divide the input by 4)."""
    return ResNet18(num_classes, in_channels, width)
