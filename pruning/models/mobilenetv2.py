"""MobileNetV2 (Sandler et al., CVPR 2018) for small inputs: inverted residuals with depthwise
3x3 convs, linear bottlenecks and residual adds where shapes match."""

from __future__ import annotations

import torch
from torch import nn

from .zoo import InChannels, NumClasses, Width, register_model


def conv_bn(
    cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True, dilation: int = 1
) -> nn.Sequential:
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU6 (unless `act` is false)."""
    pad = dilation * (k // 2)
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3, dilated by `dilation`) -> project (1x1, linear); add the
    input when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, 1))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, dilation=dilation),
            conv_bn(hidden, cout, 1, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expansion, channels, repeats, stride); strides of the first stages set to 1 for 32 px inputs.
CIFAR_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    """MobileNetV2 with a stride-1 stem, as is usual for CIFAR-size images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c = max(8, round(32 * width))
        layers: list[nn.Module] = [conv_bn(in_channels, c, 3, 1)]
        for t, ch, n, s in CIFAR_SETTING:
            out = max(8, round(ch * width))
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        last = max(8, round(1280 * min(width, 1.0)))
        layers.append(conv_bn(c, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: NumClasses = 10, in_channels: InChannels = 3, width: Width = 1.0) -> MobileNetV2:
    """MobileNetV2 for CIFAR-size inputs."""
    return MobileNetV2(num_classes, in_channels, width)
