"""Full-size networks written as torchvision writes them (torchvision itself cannot be installed
next to the CPU torch): VGG-11 with BN, AlexNet and Wide ResNet-50-2, with torchvision's layer
structure, widths and initialisation, for 224 px inputs. Programs of this size (233 to 507 MB
as `.pt2`) are what a team sends; the small corpus beside them checks the engine's cuts, these
check that intake, tracing and a cut hold up at that size (`FULL_SIZE` in `corpus`).

`width` divides every channel and hidden width (1: torchvision's own); a test uses a larger one
to run the same structure in seconds."""

from __future__ import annotations

import torch
from torch import nn

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""torchvision's VGG configuration "A" (VGG-11): conv widths, "M" a 2x2 max pool."""


class TorchvisionVGG(nn.Module):
    """torchvision's `vgg11_bn`: cfg A convs (3x3, BN, ReLU), adaptive average pool to 7x7 and
    the 25088-4096-4096-classes classifier with dropout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG11_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                out = v // width
                layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = 4096 // width
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class TorchvisionAlexNet(nn.Module):
    """torchvision's `alexnet`: 64-192-384-256-256 convs (11x11 stride-4 stem), adaptive average
    pool to 6x6 and the 9216-4096-4096-classes classifier with dropout; PyTorch's default init."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (w // width for w in (64, 192, 384, 256, 256))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        hidden = 4096 // width
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class TorchvisionBottleneck(nn.Module):
    """torchvision's `Bottleneck` (ResNet v1.5: the stride on the 3x3 conv), inner width
    `planes * base_width / 64`, output `planes * 4`."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, base_width: int = 64
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchvisionWideResNet(nn.Module):
    """torchvision's `wide_resnet50_2`: ResNet-50 (7x7 stem, max pool, Bottleneck layers
    [3, 4, 6, 3]) with `width_per_group` 128, so each block's inner width is twice ResNet-50's."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        width_per_group: int = 128,
    ) -> None:
        super().__init__()
        self.inplanes = 64 // width
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64 // width, layers[0])
        self.layer2 = self._make_layer(128 // width, layers[1], stride=2)
        self.layer3 = self._make_layer(256 // width, layers[2], stride=2)
        self.layer4 = self._make_layer(512 // width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        out = planes * TorchvisionBottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [TorchvisionBottleneck(self.inplanes, planes, stride, downsample, self.base_width)]
        self.inplanes = out
        layers += [TorchvisionBottleneck(out, planes, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
