"""A YOLOv8-style anchor-free detector (Jocher et al., Ultralytics YOLOv8, 2023), sized by the
YOLOv8n and YOLOv8s width and depth multipliers.

Backbone: Conv-BN-SiLU stem and strided convs, C2f blocks (a 1x1 conv whose output is chunked
into two halves, bottlenecks on the second, all parts concatenated and fused by a 1x1 conv) and
SPPF (three chained 5x5 max pools, the four maps concatenated). Neck: a PAN (top-down:
upsample + concat + C2f; bottom-up: strided conv + concat + C2f) giving maps at strides 8, 16
and 32. Head: per level, a decoupled box branch (4 x `reg_max` logits, the distribution focal
loss's bins) and class branch (K logits). Decoding runs inside the network: a softmax over the
bins and a fixed 1x1 conv with weights 0..reg_max-1 (the DFL's expectation; not trained, never
cut) give the four distances from each anchor centre, turned into a `cxcywh` box in input
pixels; class scores go through a sigmoid. One output tensor (N, 4 + K, A), anchors level by
level (strides 8, 16, 32), row-major within a level, in train and eval mode alike
(`pruning.detection`'s contract). Anchors and strides come from the input's static shape, so
the network exports with `torch.export`. The input side must be a multiple of 32."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from ..errors import PruningError
from .zoo import InChannels, NumClasses, Width, register_model

STRIDES = (8, 16, 32)
"""The strides of the three detection levels (P3, P4, P5)."""
REG_MAX = 16
"""Bins of each side's distance distribution (YOLOv8's default)."""
PRIOR_SIDE = 640
"""The image side YOLOv8's class-bias prior assumes (about 5 objects per 640 px image)."""

# The input side: a multiple of the largest stride, so every level's grid is whole.
YoloInputSize = Annotated[
    int, Field(ge=32, le=1024, multiple_of=32, description="input image side in pixels (a multiple of 32)")
]
RegMax = Annotated[int, Field(ge=1, le=32, description="bins of each box side's distance distribution (DFL)")]

DFL_PIN = "the DFL's fixed decoding conv (bin centres 0..reg_max-1, not trained): kept whole"
BOX_PIN = "the box distributions (4 x reg_max bins) the DFL decodes: the network's output, kept whole"
CLASS_PIN = "the class scores of a detection level: the network's output, kept whole"


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU, 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 Convs, with the input added back when `shortcut`."""

    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convs: 1x1 conv to 2c, chunk into halves, `n` bottlenecks on the
    second half (each reading the previous one's output), concat of both halves and every
    bottleneck's output, 1x1 conv to `cout`."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        c = cout // 2
        self.cv1 = Conv(cin, 2 * c, 1)
        self.cv2 = Conv((2 + n) * c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 conv to half, three chained 5x5 max pools, the four
    maps concatenated, 1x1 conv."""

    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__()
        c = cin // 2
        self.cv1 = Conv(cin, c, 1)
        self.cv2 = Conv(4 * c, cout, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """The distribution focal loss's decoding (Li et al., 2020): per box side, the expectation
    of a softmax over `reg_max` bins, as a fixed 1x1 conv whose weights are the bin indices."""

    def __init__(self, reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4 * reg_max, A) logits -> (N, 4, A) distances in bins."""
        n, _, a = x.shape
        return self.conv(x.view(n, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(n, 4, a)


def _anchors(sizes: list[tuple[int, int]], strides: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Anchor centres (2, A) in input pixels and each anchor's stride (1, A), level by level,
    row-major within a level (from the feature maps' static sizes)."""
    points, steps = [], []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) * s
        xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx.reshape(-1), gy.reshape(-1))))
        steps.append(torch.full((1, h * w), float(s), device=like.device, dtype=like.dtype))
    return torch.cat(points, 1), torch.cat(steps, 1)


def out_conv(branch: nn.Module) -> nn.Conv2d:
    """The last layer of a head branch: the 1x1 conv giving its outputs."""
    conv = list(branch.children())[-1]
    assert isinstance(conv, nn.Conv2d)
    return conv


class Detect(nn.Module):
    """Decoupled anchor-free heads per level and the in-graph decoding to (N, 4 + K, A)."""

    def __init__(self, num_classes: int, channels: tuple[int, ...], reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        c2 = max(16, channels[0] // 4, 4 * reg_max)
        c3 = max(channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, num_classes, 1)) for c in channels
        )
        self.dfl = DFL(reg_max)
        self.reset_bias()

    def reset_bias(self) -> None:
        """YOLOv8's bias init: box logits 1.0; class logits log(5 / K / (640 / s)^2), a prior of
        about 5 objects of each class per 640 px image spread over the level's cells."""
        for box, cls, s in zip(self.box, self.cls, STRIDES, strict=True):
            box_bias, cls_bias = out_conv(box).bias, out_conv(cls).bias
            assert box_bias is not None
            assert cls_bias is not None
            nn.init.constant_(box_bias, 1.0)
            nn.init.constant_(cls_bias, math.log(5 / self.num_classes / (PRIOR_SIDE / s) ** 2))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        box = torch.cat([b(f).flatten(2) for b, f in zip(self.box, feats, strict=True)], 2)
        cls = torch.cat([c(f).flatten(2) for c, f in zip(self.cls, feats, strict=True)], 2)
        points, steps = _anchors([(f.shape[2], f.shape[3]) for f in feats], STRIDES, box)
        lt, rb = self.dfl(box).chunk(2, 1)  # distances left/top and right/bottom, in strides
        x1y1, x2y2 = points - lt * steps, points + rb * steps
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)
        return torch.cat((xywh, cls.sigmoid()), 1)


class YOLO(nn.Module):
    """Backbone (C2f stages, SPPF), PAN neck and the decoupled detection head."""

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 3,
        width: float = 0.25,
        depth: float = 0.33,
        max_channels: int = 1024,
        reg_max: int = REG_MAX,
    ) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, math.ceil(min(c, max_channels) * width / 8) * 8)  # YOLOv8's make_divisible

        def n(r: int) -> int:
            return max(round(r * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.stem = Conv(in_channels, c1, 3, 2)
        self.stage2 = nn.Sequential(Conv(c1, c2, 3, 2), C2f(c2, c2, n(3), True))
        self.stage3 = nn.Sequential(Conv(c2, c3, 3, 2), C2f(c3, c3, n(6), True))
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2), C2f(c4, c4, n(6), True))
        self.stage5 = nn.Sequential(Conv(c4, c5, 3, 2), C2f(c5, c5, n(3), True), SPPF(c5, c5))
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top4 = C2f(c5 + c4, c4, n(3))
        self.top3 = C2f(c4 + c3, c3, n(3))
        self.down3 = Conv(c3, c3, 3, 2)
        self.out4 = C2f(c3 + c4, c4, n(3))
        self.down4 = Conv(c4, c4, 3, 2)
        self.out5 = C2f(c4 + c5, c5, n(3))
        self.detect = Detect(num_classes, (c3, c4, c5), reg_max)
        self.channel_pins = {self._name(self.detect.dfl.conv): DFL_PIN}
        for box, cls in zip(self.detect.box, self.detect.cls, strict=True):
            self.channel_pins[self._name(out_conv(box))] = BOX_PIN
            self.channel_pins[self._name(out_conv(cls))] = CLASS_PIN

    def _name(self, module: nn.Module) -> str:
        return next(n for n, m in self.named_modules() if m is module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % STRIDES[-1] or w % STRIDES[-1]:
            raise PruningError(f"the detector's input side must be a multiple of {STRIDES[-1]}, got {h}x{w}")
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        o3 = self.top3(torch.cat([self.up(t4), p3], 1))
        o4 = self.out4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.out5(torch.cat([self.down4(o4), p5], 1))
        return self.detect([o3, o4, o5])


@register_model("yolo_nano")
def yolo_nano(
    num_classes: NumClasses = 3,
    in_channels: InChannels = 3,
    width: Width = 1.0,
    reg_max: RegMax = REG_MAX,
    input_size: YoloInputSize | None = None,
) -> YOLO:
    """YOLOv8n-like detector (widths 16-256 at `width` 1, depth 0.33): (N, 4 + K, A) boxes
    (cxcywh, input pixels) and class probabilities. `input_size` is only checked (a multiple
    of 32): the network reads its size from the input."""
    return YOLO(num_classes, in_channels, 0.25 * width, 0.33, 1024, reg_max)


@register_model("yolo_small")
def yolo_small(
    num_classes: NumClasses = 3,
    in_channels: InChannels = 3,
    width: Width = 1.0,
    reg_max: RegMax = REG_MAX,
    input_size: YoloInputSize | None = None,
) -> YOLO:
    """YOLOv8s-like detector (widths 32-512 at `width` 1, depth 0.33): (N, 4 + K, A) boxes
    (cxcywh, input pixels) and class probabilities. `input_size` is only checked (a multiple
    of 32): the network reads its size from the input."""
    return YOLO(num_classes, in_channels, 0.5 * width, 0.33, 1024, reg_max)
