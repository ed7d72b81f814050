"""A DeepLabV3-style segmenter (Chen et al., 2017) on a MobileNetV2 backbone, sized for small
inputs: the backbone runs at output stride 8 (its last two strided stages dilated instead),
Atrous Spatial Pyramid Pooling reads the features through a 1x1 conv, three dilated 3x3 convs
and an image-pooling branch, concatenated and projected; a 3x3 conv and a 1x1 classifier give
low-resolution logits that are upsampled bilinearly to the input's size. ASPP rates (2, 4, 6)
suit an 8x8 feature map of a 64 px input (the paper's 6-12-18 are for 513 px); ASPP width 128
at `width` 1 (the paper's 256 is too heavy for CPU jobs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mobilenetv2 import InvertedResidual, conv_bn
from .zoo import InChannels, NumClasses, Width, register_model

# (expansion, channels, repeats, stride, dilation): MobileNetV2's stages at output stride 8
BACKBONE = [
    (1, 16, 1, 1, 1),
    (6, 24, 2, 2, 1),
    (6, 32, 3, 2, 1),
    (6, 64, 4, 1, 2),
    (6, 96, 3, 1, 2),
    (6, 160, 3, 1, 4),
    (6, 320, 1, 1, 4),
]
ASPP_RATES = (2, 4, 6)


class ASPP(nn.Module):
    """Parallel 1x1, dilated 3x3 and image-pooling branches, concatenated and projected by a 1x1."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout, 1, 1)])
        self.branches.extend(conv_bn(cin, cout, 3, 1, dilation=r) for r in rates)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU6(inplace=True))
        self.project = conv_bn(cout * (len(rates) + 2), cout, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabV3(nn.Module):
    """MobileNetV2 features (stride 8) -> ASPP -> 3x3 conv -> 1x1 classifier -> upsample."""

    def __init__(self, num_classes: int = 4, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c = max(8, round(32 * width))
        layers: list[nn.Module] = [conv_bn(in_channels, c, 3, 2)]
        for t, ch, n, s, d in BACKBONE:
            out = max(8, round(ch * width))
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t, dilation=d))
                c = out
        self.backbone = nn.Sequential(*layers)
        aspp = max(8, round(128 * width))
        self.aspp = ASPP(c, aspp)
        self.head = conv_bn(aspp, aspp, 3, 1)
        self.classifier = nn.Conv2d(aspp, num_classes, 1)  # last: the engine's output layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits = self.classifier(self.head(self.aspp(self.backbone(x))))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@register_model("deeplabv3")
def deeplabv3(num_classes: NumClasses = 4, in_channels: InChannels = 3, width: Width = 1.0) -> DeepLabV3:
    """DeepLabV3-style segmenter on MobileNetV2 (per-pixel logits at the input's resolution)."""
    return DeepLabV3(num_classes, in_channels, width)
