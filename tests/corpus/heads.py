"""A network with several outputs: a classifier with an auxiliary head, returning
`{"out": main head, "aux": auxiliary head}` as torchvision's segmentation models and
GoogLeNet's training mode do."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv_bn


class AuxHeadNet(nn.Module):
    """Three conv stages; "out" classifies from the last, "aux" from the middle one (its own
    1x1 conv and linear layer), so a cut of the middle stage changes both heads."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 8)
        self.stage1 = nn.Sequential(conv_bn(8, 16, 3, 2), conv_bn(16, 16))
        self.stage2 = nn.Sequential(conv_bn(16, 32, 3, 2), conv_bn(32, 32))
        self.head = nn.Linear(32, num_classes)
        self.aux_conv = conv_bn(16, 8, 1)
        self.aux_fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mid = self.stage1(self.stem(x))
        out = self.head(self.stage2(mid).mean((2, 3)))
        aux = self.aux_fc(self.aux_conv(mid).mean((2, 3)))
        return {"out": out, "aux": aux}
