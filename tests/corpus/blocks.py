"""Small building blocks shared by the corpus networks."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU
) -> nn.Sequential:
    """Conv (same padding, no bias) + BN (+ activation)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with 1x1 convs, as MobileNetV3/EfficientNet/RegNetY use."""

    def __init__(self, c: int, squeeze: int, gate: type[nn.Module] = nn.Sigmoid, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class LinearSE(nn.Module):
    """Squeeze-and-excitation written with Linear layers and views (the original SENet code)."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // reduction), nn.ReLU(), nn.Linear(c // reduction, c), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        return x * self.fc(x.mean((2, 3)).view(b, c)).view(b, c, 1, 1)


class Classifier(nn.Module):
    """Global average pool + linear layer."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
