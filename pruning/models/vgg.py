"""VGG-16 with BatchNorm, the CIFAR variant used by Li et al. 2016 (L1 filter pruning) and
Liu et al. 2017 (Network Slimming): 13 convs, global pooling, one classifier layer."""

from __future__ import annotations

import torch
from torch import nn

from .zoo import InChannels, NumClasses, Width, register_model

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max-pools; pooling adapts so small inputs (8-32 px) work."""

    def __init__(self, cfg: list, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = max(1, round(v * width))
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg16_bn")
def vgg16_bn(num_classes: NumClasses = 10, in_channels: InChannels = 3, width: Width = 1.0) -> VGG:
    """VGG-16-BN for CIFAR-size inputs."""
    return VGG(CFG16, num_classes, in_channels, width)
