"""Classic convolutional families: VGG, AlexNet, ResNet (basic, bottleneck, SE), Wide ResNet,
ResNeXt, Res2Net, DenseNet, GoogLeNet, SqueezeNet and Xception, at 32 px with few channels."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Classifier, LinearSE, conv_bn


class VGG(nn.Module):
    """VGG-11 with BN (Simonyan & Zisserman 2015), channels / 8; flatten into a 2-layer classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in (8, "M", 16, "M", 32, 32, "M", 64, 64, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers.append(conv_bn(c, v))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * 2 * 2, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """AlexNet's shape (Krizhevsky et al. 2012): large first kernel, no BN, dropout, three linear layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, 2, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 24, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(24 * 4 * 4, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, c, 3, stride)
        self.conv2 = conv_bn(c, c, 3, act=None)
        self.se = LinearSE(c) if se else nn.Identity()
        self.down = conv_bn(cin, c, 1, stride, act=None) if stride != 1 or cin != c else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.down(x) + self.se(self.conv2(self.conv1(x))))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int = 1, groups: int = 1, width: int | None = None) -> None:
        super().__init__()
        w = width or c
        out = c * self.expansion
        self.conv1 = conv_bn(cin, w, 1)
        self.conv2 = conv_bn(w, w, 3, stride, groups=groups)
        self.conv3 = conv_bn(w, out, 1, act=None)
        self.down = conv_bn(cin, out, 1, stride, act=None) if stride != 1 or cin != out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.down(x) + self.conv3(self.conv2(self.conv1(x))))


class ResNet(nn.Module):
    """ResNet (He et al. 2016) for 32 px: 3x3 stem, three stages; `block` basic or bottleneck,
    `groups`/`width` make it ResNeXt, `se` an SE-ResNet."""

    def __init__(
        self,
        block: str = "basic",
        depths: tuple[int, ...] = (2, 2, 2),
        widths: tuple[int, ...] = (8, 16, 32),
        num_classes: int = 10,
        in_channels: int = 3,
        groups: int = 1,
        width_per_group: int | None = None,
        se: bool = False,
    ) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, widths[0], 3)
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (d, c) in enumerate(zip(depths, widths, strict=True)):
            for j in range(d):
                stride = 2 if i > 0 and j == 0 else 1
                if block == "basic":
                    layers.append(BasicBlock(cin, c, stride, se=se))
                    cin = c
                else:
                    width = groups * width_per_group if width_per_group else None
                    layers.append(Bottleneck(cin, c, stride, groups, width))
                    cin = c * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.head = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class WideBlock(nn.Module):
    """Wide ResNet's pre-activation basic block (BN-ReLU-conv twice, dropout between)."""

    def __init__(self, cin: int, c: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.drop = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.short = nn.Conv2d(cin, c, 1, stride, bias=False) if stride != 1 or cin != c else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(o)))))
        return y + (self.short(o) if self.short is not None else x)


class WideResNet(nn.Module):
    """WRN-10-4 (Zagoruyko & Komodakis 2016) with base width 4: pre-activation, widen factor 4."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widen: int = 4) -> None:
        super().__init__()
        widths = [4 * widen, 8 * widen, 16 * widen]
        self.conv = nn.Conv2d(in_channels, 4, 3, 1, 1, bias=False)
        blocks, cin = [], 4
        for i, c in enumerate(widths):
            blocks.append(WideBlock(cin, c, 1 if i == 0 else 2))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(x.mean((2, 3)))


class Res2Block(nn.Module):
    """Res2Net's bottleneck (Gao et al. 2019): the 1x1 output is split into `scales` parts with
    torch.split; each part after the first is convolved after adding the previous part's output."""

    def __init__(self, cin: int, width: int, scales: int = 4, stride: int = 1) -> None:
        super().__init__()
        self.width, self.scales = width, scales
        self.conv1 = conv_bn(cin, width * scales, 1)
        self.convs = nn.ModuleList(conv_bn(width, width, 3) for _ in range(scales - 1))
        self.conv3 = conv_bn(width * scales, cin, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(self.conv1(x), self.width, dim=1)
        outs, prev = [], None
        for i, p in enumerate(parts[:-1]):
            prev = self.convs[i](p if prev is None else p + prev)
            outs.append(prev)
        outs.append(parts[-1])
        return torch.relu(x + self.conv3(torch.cat(outs, 1)))


class Res2Net(nn.Module):
    """A small Res2Net: stem, two Res2 blocks per stage, strided conv between stages."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 16, 3)
        self.stage1 = nn.Sequential(Res2Block(16, 4), Res2Block(16, 4))
        self.down = conv_bn(16, 32, 3, 2)
        self.stage2 = nn.Sequential(Res2Block(32, 8), Res2Block(32, 8))
        self.head = Classifier(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn2(self.conv1(torch.relu(self.bn1(x))))))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017): dense blocks whose layers concatenate onto their input
    (cascaded concat), transitions halve channels and resolution."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, growth: int = 6) -> None:
        super().__init__()
        c = 2 * growth
        self.stem = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        for i in range(3):
            for _ in range(3):
                stages.append(DenseLayer(c, growth))
                c += growth
            if i < 2:
                stages += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        self.features = nn.Sequential(*stages, nn.BatchNorm2d(c), nn.ReLU())
        self.head = Classifier(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class Inception(nn.Module):
    """GoogLeNet's inception module: 1x1, 1x1->3x3, 1x1->5x5 (as two 3x3), pool->1x1, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = conv_bn(cin, c1, 1)
        self.b2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        self.b3 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 3), conv_bn(c5, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """GoogLeNet (Szegedy et al. 2015) with parallel branches, channels / 8."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 24, 3)
        self.a3 = Inception(24, 8, 12, 16, 4, 4, 4)
        self.b3 = Inception(32, 16, 16, 24, 4, 12, 8)
        self.pool = nn.MaxPool2d(2)
        self.a4 = Inception(60, 24, 12, 26, 4, 6, 8)
        self.b4 = Inception(64, 20, 14, 28, 4, 8, 8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b3(self.a3(self.stem(x)))
        return self.head(self.b4(self.a4(self.pool(x))))


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, s: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.e1 = nn.Conv2d(s, e1, 1)
        self.e3 = nn.Conv2d(s, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(s)), torch.relu(self.e3(s))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 (Iandola et al. 2016), channels / 4: fire modules, a conv classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1),
            nn.ReLU(),
            Fire(16, 4, 16, 16),
            Fire(32, 4, 16, 16),
            nn.MaxPool2d(2),
            Fire(32, 8, 32, 32),
            Fire(64, 8, 32, 32),
            nn.MaxPool2d(2),
            Fire(64, 12, 48, 48),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(96, num_classes, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.classifier(self.features(x)), 1), 1)


class SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


class XceptionBlock(nn.Module):
    """Xception's block (Chollet 2017): ReLU-separable conv-BN twice, max-pool, strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            SeparableConv(cin, cout),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            SeparableConv(cout, cout),
            nn.BatchNorm2d(cout),
            nn.MaxPool2d(3, 2, 1),
        )
        self.skip = conv_bn(cin, cout, 1, 2, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Xception(nn.Module):
    """A small Xception: stem, three entry-flow blocks, separable conv, classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, 8, 3), conv_bn(8, 16, 3))
        self.blocks = nn.Sequential(XceptionBlock(16, 24), XceptionBlock(24, 32), XceptionBlock(32, 48))
        self.exit = nn.Sequential(SeparableConv(48, 64), nn.BatchNorm2d(64), nn.ReLU())
        self.head = Classifier(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.exit(self.blocks(self.stem(x))))
