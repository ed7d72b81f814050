"""Detectors written the way their libraries write them (neither library can be installed next
to the CPU torch): a YOLOv8 after Ultralytics' code (`Conv`, `C2f`, `Bottleneck`, `SPPF`,
`Concat`, a `DetectionModel` running a layer list with `from` indices, the `Detect` head with
its `DFL`, `make_anchors` and `dist2bbox`), and an FCOS after torchvision's (a ResNet body,
`FeaturePyramidNetwork` with `LastLevelP6P7`, one head shared by every level)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# ---- Ultralytics' YOLOv8 ---------------------------------------------------------------------


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """Padding that keeps the output the input's size ('same'), as ultralytics.nn.modules.conv."""
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU."""

    default_act = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two convs with a shortcut when the input and output widths match."""

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple[int, int] = (3, 3), e: float = 0.5
    ):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """CSP bottleneck with two convs: `cv1`'s output chunked in two, each bottleneck reading the
    last part, everything concatenated into `cv2`. `use_split`: Ultralytics' `forward_split`
    (`split((c, c), 1)`) instead of `chunk(2, 1)`."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))
        self.use_split = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_split:
            return self.forward_split(x)
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    def forward_split(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: one 5x5 max pool applied three times, all concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class DFL(nn.Module):
    """Distribution focal loss integral: a fixed 1x1 conv whose weights are 0..c1-1 turns each
    side's softmax over `c1` bins into its expected distance."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        x = torch.arange(c1, dtype=torch.float)
        self.conv.weight.data[:] = nn.Parameter(x.view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(
    feats: list[torch.Tensor], strides: torch.Tensor, grid_cell_offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (cell units) and their strides for every level, row-major within a level."""
    anchor_points, stride_tensor = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, stride in enumerate(strides.tolist()):
        h, w = feats[i].shape[2:]
        sx = torch.arange(end=w, device=device, dtype=dtype) + grid_cell_offset
        sy = torch.arange(end=h, device=device, dtype=dtype) + grid_cell_offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype, device=device))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Distances to the box's sides (left, top, right, bottom) into cxcywh (or xyxy) boxes."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class Detect(nn.Module):
    """YOLOv8's decoupled head: per level a box branch (`cv2`: 4 x `reg_max` bins) and a class
    branch (`cv3`), concatenated, flattened over the levels, decoded by the DFL and the anchors
    into `(N, 4 + nc, A)`: cxcywh boxes in input pixels, sigmoid class scores (the export-mode
    output, in training as in evaluation)."""

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = 16
        self.no = nc + self.reg_max * 4
        self.stride = torch.zeros(self.nl)
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch
        )
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, self.nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def bias_init(self) -> None:
        """Ultralytics' prior: box bins at 1.0, class logits for ~5 objects per 640 px image."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride.tolist(), strict=True):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)


YOLOV8 = [  # yolov8.yaml: [from, repeats, module, args]
    [-1, 1, Conv, [64, 3, 2]],  # 0-P1/2
    [-1, 1, Conv, [128, 3, 2]],  # 1-P2/4
    [-1, 3, C2f, [128, True]],
    [-1, 1, Conv, [256, 3, 2]],  # 3-P3/8
    [-1, 6, C2f, [256, True]],
    [-1, 1, Conv, [512, 3, 2]],  # 5-P4/16
    [-1, 6, C2f, [512, True]],
    [-1, 1, Conv, [1024, 3, 2]],  # 7-P5/32
    [-1, 3, C2f, [1024, True]],
    [-1, 1, SPPF, [1024, 5]],  # 9
    [-1, 1, nn.Upsample, [None, 2, "nearest"]],
    [[-1, 6], 1, Concat, [1]],  # cat backbone P4
    [-1, 3, C2f, [512]],  # 12
    [-1, 1, nn.Upsample, [None, 2, "nearest"]],
    [[-1, 4], 1, Concat, [1]],  # cat backbone P3
    [-1, 3, C2f, [256]],  # 15 (P3/8-small)
    [-1, 1, Conv, [256, 3, 2]],
    [[-1, 12], 1, Concat, [1]],  # cat head P4
    [-1, 3, C2f, [512]],  # 18 (P4/16-medium)
    [-1, 1, Conv, [512, 3, 2]],
    [[-1, 9], 1, Concat, [1]],  # cat head P5
    [-1, 3, C2f, [1024]],  # 21 (P5/32-large)
    [[15, 18, 21], 1, Detect, ["nc"]],  # Detect(P3, P4, P5)
]


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class DetectionModel(nn.Module):
    """`ultralytics.nn.tasks.DetectionModel` reduced to inference: `self.model` is the layer list
    parsed from `YOLOV8` at a depth and width multiple (YOLOv8n: 0.33, 0.25), each layer with
    `f` (inputs) and `i` (index); `forward` keeps the outputs later layers read. `split_neck`:
    the neck's C2f blocks run Ultralytics' `forward_split` (both of its forms in one network).
    `prior`: Ultralytics' bias initialisation (class scores near 0; off, random weights give
    scores across (0, 1), where a wrongly cut channel shows)."""

    def __init__(
        self,
        nc: int = 3,
        ch: int = 3,
        depth: float = 0.33,
        width: float = 0.25,
        max_channels: int = 1024,
        split_neck: bool = True,
        prior: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        save: list[int] = []
        chs = [ch]
        for i, (f, repeats, m, args) in enumerate(YOLOV8):
            n = max(round(repeats * depth), 1) if repeats > 1 else repeats
            if m in (Conv, C2f, SPPF):
                c1, c2 = chs[f], make_divisible(min(args[0], max_channels) * width, 8)
                margs: list[Any] = [c1, c2, *args[1:]]
                if m is C2f:
                    margs.insert(2, n)
                    n = 1
            elif m is Concat:
                c2 = sum(chs[x] for x in f)
                margs = list(args)
            elif m is Detect:
                margs = [nc, tuple(chs[x] for x in f)]
                c2 = 0
            else:
                c2, margs = chs[f], list(args)
            module = nn.Sequential(*(m(*margs) for _ in range(n))) if n > 1 else m(*margs)
            module.f, module.i = f, i  # type: ignore[assignment]
            if m is C2f and split_neck and i > 9:
                module.use_split = True  # type: ignore[assignment]
            save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(module)
            if i == 0:
                chs = []
            chs.append(c2)
        self.model = nn.Sequential(*layers)
        self.save = sorted(save)
        detect = self.model[-1]
        assert isinstance(detect, Detect)
        s = 256  # the strides from a forward, as Ultralytics finds them
        detect.stride = torch.tensor([s / x.shape[-2] for x in self._features(torch.zeros(1, ch, s, s))])
        if prior:
            detect.bias_init()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The inputs the Detect layer reads."""
        y: list[torch.Tensor | None] = []
        for m in self.model[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return [y[j] for j in self.model[-1].f]  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model[-1](self._features(x))


# ---- torchvision's FCOS ------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBody(nn.Module):
    """torchvision's ResNet up to layer4 (a ResNet-10-ish: one basic block per stage), returning
    C3, C4, C5 as `IntermediateLayerGetter` does for the detection backbones."""

    def __init__(self, widths: tuple[int, int, int, int] = (8, 16, 32, 64), in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for k, c in enumerate(widths):
            stride = 1 if k == 0 else 2
            down = (
                None
                if stride == 1 and cin == c
                else nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
            )
            self.add_module(f"layer{k + 1}", nn.Sequential(BasicBlock(cin, c, stride, down)))
            cin = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class LastLevelP6P7(nn.Module):
    """torchvision.ops.feature_pyramid_network.LastLevelP6P7: P6 from P5 (3x3, stride 2), P7 from ReLU(P6)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.use_P5 = in_channels == out_channels

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor]) -> list[torch.Tensor]:
        x = p[-1] if self.use_P5 else c[-1]
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6))
        return [*p, p6, p7]


class FeaturePyramidNetwork(nn.Module):
    """torchvision's FPN: `inner_blocks` (lateral 1x1), nearest top-down upsampling added to
    each lateral, `layer_blocks` (3x3 output convs), then the extra block (P6, P7)."""

    def __init__(self, in_channels_list: list[int], out_channels: int, extra_blocks: nn.Module | None = None) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list)
        self.extra_blocks = extra_blocks

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        last_inner = self.inner_blocks[-1](x[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(x) - 2, -1, -1):
            inner_lateral = self.inner_blocks[idx](x[idx])
            inner_top_down = F.interpolate(last_inner, size=inner_lateral.shape[-2:], mode="nearest")
            last_inner = inner_lateral + inner_top_down
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_blocks is not None:
            results = self.extra_blocks(results, x)
        return results


def _tower(channels: int, num_convs: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, 1, 1))
        if norm:
            layers.append(nn.GroupNorm(4, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """torchvision's FCOSHead (classification: tower + `cls_logits`; regression: tower +
    `bbox_reg` and `bbox_ctrness`), the same weights applied to every level; each output is
    flattened per level to (N, H*W*anchors, ...) and concatenated over the levels."""

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 2, norm: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _tower(in_channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_tower = _tower(in_channels, num_convs, norm)
        self.bbox_reg = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.bbox_ctrness = nn.Conv2d(in_channels, 1, 3, 1, 1)

    @staticmethod
    def _flat(t: torch.Tensor, k: int) -> torch.Tensor:
        n, _, h, w = t.shape
        return t.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        cls, reg, ctr = [], [], []
        for features in x:
            cls.append(self._flat(self.cls_logits(self.cls_tower(features)), self.num_classes))
            tower = self.bbox_tower(features)
            reg.append(self._flat(F.relu(self.bbox_reg(tower)), 4))
            ctr.append(self._flat(self.bbox_ctrness(tower), 1))
        return {
            "cls_logits": torch.cat(cls, 1),
            "bbox_regression": torch.cat(reg, 1),
            "bbox_ctrness": torch.cat(ctr, 1),
        }


class FCOS(nn.Module):
    """FCOS (Tian et al. 2019) as torchvision builds it, without the post-processing: ResNet
    body, FPN on C3-C5 with P6/P7 from P5 (`p6p7`), a shared head with GroupNorm (`norm`).
    Output: a dict of class logits (N, A, K), box regressions (N, A, 4) and centerness (N, A, 1)."""

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 3,
        widths: tuple[int, int, int, int] = (8, 16, 32, 64),
        fpn_channels: int = 16,
        p6p7: bool = True,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.body = ResNetBody(widths, in_channels)
        extra = LastLevelP6P7(fpn_channels, fpn_channels) if p6p7 else None
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), fpn_channels, extra)
        self.head = FCOSHead(fpn_channels, num_classes, norm=norm)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.fpn(self.body(x)))
