"""U-Net (Ronneberger et al., MICCAI 2015) for semantic segmentation, sized for small inputs:
three 2x poolings and back, each decoder stage concatenating the upsampled features with the
encoder's skip at that resolution. Widths 32-64-128-256 at `width` 1 (the paper's 64-1024 are
too heavy for CPU jobs); batch norm after every conv; bilinear upsampling. The output has
`num_classes` logits per pixel at the input's resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .zoo import InChannels, NumClasses, Width, register_model

LEVELS = 3  # poolings; the input side need not be a multiple of 2**LEVELS (skips are matched)


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder (double convs and max pools), bottleneck, decoder (upsample, concatenate the
    skip, double conv) and a 1x1 classifier."""

    def __init__(self, num_classes: int = 4, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        chans = [max(4, round(32 * width * 2**i)) for i in range(LEVELS + 1)]
        self.encoders = nn.ModuleList()
        c = in_channels
        for out in chans[:-1]:
            self.encoders.append(double_conv(c, out))
            c = out
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(c, chans[-1])
        c = chans[-1]
        self.decoders = nn.ModuleList()
        for skip in reversed(chans[:-1]):
            self.decoders.append(double_conv(c + skip, skip))
            c = skip
        self.classifier = nn.Conv2d(c, num_classes, 1)  # last: the engine's output layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for dec, skip in zip(self.decoders, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], 1))
        return self.classifier(x)


@register_model("unet")
def unet(num_classes: NumClasses = 4, in_channels: InChannels = 3, width: Width = 1.0) -> UNet:
    """U-Net for semantic segmentation (per-pixel logits at the input's resolution)."""
    return UNet(num_classes, in_channels, width)
