"""Dense-prediction shapes: a U-Net (skip concatenations, transposed convs, per-pixel output)
and an FPN (lateral 1x1 convs, top-down upsample-and-add)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_bn


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015), three levels, channels 8/16/32: the decoder upsamples
    with transposed convs and concatenates the encoder's maps; output: per-pixel class scores."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn(in_channels, 8), conv_bn(8, 8))
        self.enc2 = nn.Sequential(conv_bn(8, 16), conv_bn(16, 16))
        self.mid = nn.Sequential(conv_bn(16, 32), conv_bn(32, 32))
        self.up2 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.dec2 = nn.Sequential(conv_bn(32, 16), conv_bn(16, 16))
        self.up1 = nn.ConvTranspose2d(16, 8, 2, 2)
        self.dec1 = nn.Sequential(conv_bn(16, 8), conv_bn(8, 8))
        self.out = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


class FPN(nn.Module):
    """A ResNet-ish backbone with a feature pyramid (Lin et al. 2017): lateral 1x1 convs, the
    coarser level upsampled and added, 3x3 smoothing, a shared head pooled over all levels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.c1 = conv_bn(in_channels, 8, 3)
        self.c2 = nn.Sequential(conv_bn(8, 16, 3, 2), conv_bn(16, 16))
        self.c3 = nn.Sequential(conv_bn(16, 32, 3, 2), conv_bn(32, 32))
        self.c4 = nn.Sequential(conv_bn(32, 64, 3, 2), conv_bn(64, 64))
        self.lat2, self.lat3, self.lat4 = nn.Conv2d(16, width, 1), nn.Conv2d(32, width, 1), nn.Conv2d(64, width, 1)
        self.smooth2 = nn.Conv2d(width, width, 3, padding=1)
        self.smooth3 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.c2(self.c1(x))
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        p4 = self.lat4(c4)
        p3 = self.lat3(c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lat2(c2) + F.interpolate(p3, scale_factor=2.0, mode="nearest")
        levels = [self.smooth2(p2), self.smooth3(p3), p4]
        pooled = sum(torch.relu(self.head(p)).mean((2, 3)) for p in levels)
        assert isinstance(pooled, torch.Tensor)
        return self.fc(pooled)
