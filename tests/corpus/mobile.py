"""Mobile and modern families: MobileNet V1/V2/V3, EfficientNet, RegNetX/Y, ShuffleNetV2,
GhostNet, CSPNet and ConvNeXt, at 32 px with few channels."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Classifier, SqueezeExcite, conv_bn


class MobileNetV1(nn.Module):
    """MobileNet (Howard et al. 2017), width 0.125: depthwise-separable convs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        cfg = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
        layers: list[nn.Module] = [conv_bn(in_channels, 8, 3)]
        for cin, cout, s in cfg:
            layers += [conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1)]
        self.features = nn.Sequential(*layers)
        self.head = Classifier(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's / V3's / EfficientNet's MBConv: expand 1x1, depthwise kxk, optional SE,
    linear project 1x1, residual when shapes match."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        expand: int,
        k: int = 3,
        act: type[nn.Module] = nn.ReLU6,
        se: int = 0,
        gate: type[nn.Module] = nn.Sigmoid,
        se_act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, se, gate, se_act))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), width 0.25, strides for 32 px."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        cfg = [(1, 8, 1, 1), (6, 8, 2, 1), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1)]
        layers: list[nn.Module] = [conv_bn(in_channels, 8, 3, act=nn.ReLU6)]
        cin = 8
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 128, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MobileNetV3(nn.Module):
    """MobileNetV3-Small (Howard et al. 2019), width 0.5: hard-swish, SE with hard-sigmoid, 5x5 kernels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU
        # (kernel, expand, out, se, act, stride)
        cfg = [(3, 1, 8, True, re, 2), (3, 4, 12, False, re, 1), (3, 3, 12, False, re, 1), (5, 4, 20, True, hs, 2)]
        cfg += [(5, 3, 20, True, hs, 1), (5, 3, 24, True, hs, 1), (5, 3, 48, True, hs, 2)]
        layers: list[nn.Module] = [conv_bn(in_channels, 8, 3, act=hs)]
        cin = 8
        for k, e, c, se, act, s in cfg:
            layers.append(InvertedResidual(cin, c, s, e, k, act, se=(cin * e) // 4 if se else 0, gate=nn.Hardsigmoid))
            cin = c
        layers.append(conv_bn(cin, 144, 1, act=hs))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(144, 256), nn.Hardswish(), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EfficientNet(nn.Module):
    """EfficientNet-B0's layout (Tan & Le 2019), width 0.25, depth 0.5: MBConv with SE and SiLU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        # (expand, out, repeats, stride, kernel)
        cfg = [(1, 8, 1, 1, 3), (6, 8, 1, 2, 3), (6, 12, 1, 2, 5), (6, 20, 2, 2, 3), (6, 28, 1, 1, 5), (6, 48, 1, 1, 3)]
        layers: list[nn.Module] = [conv_bn(in_channels, 8, 3, act=nn.SiLU)]
        cin = 8
        for e, c, n, s, k in cfg:
            for i in range(n):
                layers.append(
                    InvertedResidual(cin, c, s if i == 0 else 1, e, k, nn.SiLU, se=max(1, cin // 4), se_act=nn.SiLU)
                )
                cin = c
        layers.append(conv_bn(cin, 160, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(160, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class RegNetBlock(nn.Module):
    """RegNet's X block (Radosavovic et al. 2020): 1x1, 3x3 grouped with a fixed group width,
    1x1, residual; Y adds SE on the grouped conv's output."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se: bool) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, 1)
        self.b = conv_bn(cout, cout, 3, stride, groups=cout // group_width)
        self.se = SqueezeExcite(cout, max(1, cin // 4)) if se else nn.Identity()
        self.c = conv_bn(cout, cout, 1, act=None)
        self.proj = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x) + self.c(self.se(self.b(self.a(x)))))


class RegNet(nn.Module):
    """A small RegNetX (or Y with `se`): widths 16/32/64, group width `group_width`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, group_width: int = 8, se: bool = False) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 16, 3)
        blocks, cin = [], 16
        for c, d, s in ((16, 1, 1), (32, 2, 2), (64, 2, 2)):
            for i in range(d):
                blocks.append(RegNetBlock(cin, c, s if i == 0 else 1, group_width, se))
                cin = c
        self.trunk = nn.Sequential(*blocks)
        self.head = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.stem(x)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view, transpose, view back with the channels named."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


def torchvision_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The channel shuffle as torchvision writes it: the last view leaves the channels to `-1`."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit (Ma et al. 2018): stride 1 splits the channels in two and convolves
    one half; stride 2 convolves both; the halves are concatenated and shuffled."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        h = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, h, 1))
        else:
            self.branch1 = nn.Sequential()
        bin_ = cin if stride > 1 else h
        self.branch2 = nn.Sequential(
            conv_bn(bin_, h, 1), conv_bn(h, h, 3, stride, groups=h, act=None), conv_bn(h, h, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 x0.5 at 32 px, channels / 2: three stages of units, 1x1 conv, classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 12, 3)
        units, cin = [], 12
        for c, n in ((24, 2), (48, 2), (96, 2)):
            for i in range(n):
                units.append(ShuffleUnit(cin, c, 2 if i == 0 else 1))
                cin = c
        self.stages = nn.Sequential(*units)
        self.conv5 = conv_bn(cin, 128, 1)
        self.head = Classifier(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv5(self.stages(self.stem(x))))


class TorchvisionShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 `InvertedResidual`, layer for layer (its stride-2 branch1 is a
    depthwise conv, BN, 1x1 conv, BN, ReLU), with torchvision's channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        h = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, bias=False, groups=cin),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, h, 1, bias=False),
                nn.BatchNorm2d(h),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, stride, 1, bias=False, groups=h),
            nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return torchvision_shuffle(out, 2)


class TorchvisionShuffleNetV2(nn.Module):
    """torchvision's ShuffleNetV2 as its code is written (conv1, max pool, three stages of
    `TorchvisionShuffleUnit`, 4, 8 and 4 units deep, conv5, global mean, fc), x0.5 widths / 2."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        widths = (12, 24, 48, 96, 256)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = widths[0]
        stages = []
        for cout, repeats in zip(widths[1:4], (4, 8, 4), strict=True):  # torchvision's depths
            units = [TorchvisionShuffleUnit(cin, cout, 2)]
            units += [TorchvisionShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(
            nn.Conv2d(cin, widths[4], 1, bias=False), nn.BatchNorm2d(widths[4]), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


class GhostModule(nn.Module):
    """GhostNet's module (Han et al. 2020): a primary 1x1 conv and cheap depthwise "ghost"
    features, concatenated and sliced to the output width."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.cout = cout
        init = (cout + 1) // 2
        act = nn.ReLU if relu else None
        self.primary = conv_bn(cin, init, 1, act=act)
        self.cheap = conv_bn(init, init, 3, groups=init, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, : self.cout]


class GhostBottleneck(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.ghost1 = GhostModule(cin, hidden)
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden, act=None) if stride > 1 else nn.Identity()
        self.ghost2 = GhostModule(hidden, cout, relu=False)
        if stride == 1 and cin == cout:
            self.short: nn.Module = nn.Identity()
        else:
            self.short = nn.Sequential(
                conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, cout, 1, act=None)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.dw(self.ghost1(x))) + self.short(x)


class GhostNet(nn.Module):
    """A small GhostNet: ghost bottlenecks (concat + channel slice) at three resolutions."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 8, 3)
        cfg = [(8, 16, 8, 1), (8, 24, 12, 2), (12, 36, 12, 1), (12, 48, 20, 2), (20, 60, 20, 1)]
        self.blocks = nn.Sequential(*(GhostBottleneck(a, h, b, s) for a, h, b, s in cfg))
        self.conv = conv_bn(20, 96, 1)
        self.head = Classifier(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.blocks(self.stem(x))))


class CSPStage(nn.Module):
    """A CSPNet stage (Wang et al. 2020, as YOLOv5's C3): two 1x1 paths, residual bottlenecks
    on one, concatenated and fused by a 1x1."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        h = cout // 2
        self.cv1 = conv_bn(cin, h, 1, act=nn.SiLU)
        self.cv2 = conv_bn(cin, h, 1, act=nn.SiLU)
        self.m = nn.ModuleList(
            nn.Sequential(conv_bn(h, h, 1, act=nn.SiLU), conv_bn(h, h, 3, act=nn.SiLU)) for _ in range(n)
        )
        self.cv3 = conv_bn(2 * h, cout, 1, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        for m in self.m:
            y = y + m(y)
        return self.cv3(torch.cat([y, self.cv2(x)], 1))


class CSPNet(nn.Module):
    """A small CSPDarknet: strided convs between CSP stages."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, 8, 3, act=nn.SiLU),
            conv_bn(8, 16, 3, 2, act=nn.SiLU),
            CSPStage(16, 16, 1),
            conv_bn(16, 32, 3, 2, act=nn.SiLU),
            CSPStage(32, 32, 2),
            conv_bn(32, 64, 3, 2, act=nn.SiLU),
            CSPStage(64, 64, 1),
        )
        self.head = Classifier(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's downsampling layers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block (Liu et al. 2022): 7x7 depthwise, LayerNorm and two linear layers in
    channels-last, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """A small ConvNeXt: 2x2 patchify stem at 32 px, three stages of blocks, LayerNorm head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        dims = (16, 32, 64)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], 2, 2), LayerNorm2d(dims[0], eps=1e-6)]
        for i, d in enumerate(dims):
            if i > 0:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [ConvNeXtBlock(d), ConvNeXtBlock(d)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.features(x).mean((2, 3))))
