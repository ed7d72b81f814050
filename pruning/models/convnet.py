"""A small plain CNN for fast tests on the digits data: three conv-BN-ReLU blocks and a
flatten into a linear layer (so the flatten dependency is exercised)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from .zoo import InChannels, NumClasses, Width, register_model

# fc1 grows with the input's area: up to 224 px keeps the largest convnet under MAX_PARAMS.
ConvNetInputSize = Annotated[int, Field(ge=8, le=224, description="input image side in pixels (sets the flatten)")]


class ConvNet(nn.Module):
    """conv(32)-conv(64)-pool-conv(64)-pool -> flatten -> fc(128) -> fc(classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 16, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, h = (max(1, round(c * width)) for c in (32, 64, 64, 128))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = input_size // 2 // 2
        self.fc1 = nn.Linear(c3 * side * side, h)
        self.fc2 = nn.Linear(h, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


@register_model("convnet")
def convnet(
    num_classes: NumClasses = 10, in_channels: InChannels = 1, input_size: ConvNetInputSize = 16, width: Width = 1.0
) -> ConvNet:
    """The small test network; `input_size` fixes the flatten width."""
    return ConvNet(num_classes, in_channels, input_size, width)
