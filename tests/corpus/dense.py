"""Dense-prediction shapes: a U-Net (skip concatenations, transposed convs, per-pixel output),
an FPN (lateral 1x1 convs, top-down upsample-and-add) and DeepLabV3 as torchvision writes it
(ASPP, auxiliary head, dict output upsampled to the input)."""

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


class _ASPPPooling(nn.Sequential):
    """ASPP's image-level branch as torchvision writes it: global pool, 1x1 conv, BN, ReLU,
    then bilinear upsampling back to the map's size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017): a 1x1 branch, dilated 3x3 branches and
    the pooling branch, concatenated and projected by a 1x1 conv."""

    def __init__(self, cin: int, rates: tuple[int, ...], cout: int) -> None:
        super().__init__()

        def branch(k: int, rate: int) -> nn.Module:
            conv = nn.Conv2d(cin, cout, k, padding=rate if k > 1 else 0, dilation=rate, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

        branches = [branch(1, 1), *(branch(3, rate) for rate in rates)]
        branches.append(_ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class TorchvisionDeepLabV3(nn.Module):
    """DeepLabV3 as torchvision writes its segmentation models (`_SimpleSegmentationModel`):
    a backbone whose two last stages feed a DeepLab head (ASPP with dilated convs and an
    image-pooling branch) and an FCN auxiliary head; each head's logits are upsampled
    bilinearly to the input's size and returned as `{"out": ..., "aux": ...}`. The last stage
    keeps stride 8 with a dilated conv, as torchvision's `replace_stride_with_dilation` does."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 8, 3, 2)
        self.layer2 = nn.Sequential(conv_bn(8, 16, 3, 2), conv_bn(16, 16))
        self.layer3 = nn.Sequential(conv_bn(16, 32, 3, 2), conv_bn(32, 32))
        self.layer4 = nn.Sequential(
            nn.Conv2d(32, 48, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(48), nn.ReLU(), conv_bn(48, 48)
        )
        self.classifier = nn.Sequential(
            _ASPP(48, (2, 4), 24), conv_bn(24, 24), nn.Conv2d(24, num_classes, 1)
        )  # DeepLabHead
        self.aux_classifier = nn.Sequential(conv_bn(32, 8), nn.Dropout(0.1), nn.Conv2d(8, num_classes, 1))  # FCNHead

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        aux = self.layer3(self.layer2(self.stem(x)))
        out = self.layer4(aux)
        result = {"out": F.interpolate(self.classifier(out), size=size, mode="bilinear", align_corners=False)}
        result["aux"] = F.interpolate(self.aux_classifier(aux), size=size, mode="bilinear", align_corners=False)
        return result
