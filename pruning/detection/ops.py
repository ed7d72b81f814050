"""Box operations in plain torch: format conversions, IoU, GIoU, CIoU, class-wise NMS, top-k.

torchvision cannot be installed beside the project's torch build, so the few box operations
detection needs are written here (and tested against brute-force references). Boxes are
`(..., 4)` tensors in pixels; `xyxy` is `[x1, y1, x2, y2]`, `cxcywh` `[cx, cy, w, h]`."""

from __future__ import annotations

import math

import torch

EPS = 1e-7


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """`[cx, cy, w, h]` boxes as `[x1, y1, x2, y2]`."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """`[x1, y1, x2, y2]` boxes as `[cx, cy, w, h]`."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of `xyxy` boxes (0 for an inverted box)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of `xyxy` boxes `a` `(..., n, 4)` and `b` `(..., m, 4)`: `(..., n, m)`; two
    empty boxes have IoU 0."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / union.clamp(min=EPS)


def _pair_terms(a: torch.Tensor, b: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IoU of matched `xyxy` boxes (identical boxes give exactly 1, empty ones too), their union
    and the enclosing box's corners."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = (inter + eps) / (union + eps)
    enclose = torch.cat((torch.minimum(a[..., :2], b[..., :2]), torch.maximum(a[..., 2:], b[..., 2:])), -1)
    return iou, union, enclose


def giou(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Generalised IoU (Rezatofighi et al. 2019) of matched `xyxy` boxes `(..., 4)`: `(...)`,
    in [-1, 1], 1 for identical boxes."""
    iou, union, enclose = _pair_terms(a, b, eps)
    area_c = box_area(enclose)
    return iou - (area_c - union) / (area_c + eps)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Complete IoU (Zheng et al. 2020) of matched `xyxy` boxes `(..., 4)`: IoU less the squared
    centre distance over the enclosing box's squared diagonal, less `alpha * v` for the
    aspect ratios' disagreement `v`; 1 for identical boxes."""
    iou, _, enclose = _pair_terms(a, b, eps)
    c2 = (enclose[..., 2:] - enclose[..., :2]).pow(2).sum(-1) + eps
    ca = (a[..., :2] + a[..., 2:]) / 2
    cb = (b[..., :2] + b[..., 2:]) / 2
    rho2 = (ca - cb).pow(2).sum(-1)
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=0), (a[..., 3] - a[..., 1]).clamp(min=0)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=0), (b[..., 3] - b[..., 1]).clamp(min=0)
    v = (4 / math.pi**2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - rho2 / c2 - alpha * v


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept `xyxy` boxes, by decreasing score;
    a box is dropped when its IoU with a kept, higher-scored box exceeds `iou_threshold`.
    `max_keep` stops once that many are kept (the same first ones)."""
    order = scores.argsort(descending=True, stable=True)
    ranked = boxes[order]
    rest = torch.arange(len(order), device=boxes.device)
    keep: list[torch.Tensor] = []
    while rest.numel() and (max_keep is None or len(keep) < max_keep):
        first, rest = rest[0], rest[1:]
        keep.append(first)
        rest = rest[box_iou(ranked[first][None], ranked[rest])[0] <= iou_threshold]
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return order[torch.stack(keep)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float, max_keep: int | None = None
) -> torch.Tensor:
    """Class-wise NMS: boxes of different classes never suppress each other (each class's boxes
    are shifted apart by more than any box's extent, then one `nms`)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = float(boxes.abs().max()) * 2 + 1
    shifted = boxes + (classes.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)


def topk_per_image(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest of one image's scores `(n,)`, highest first (all when fewer)."""
    return scores.topk(min(int(k), scores.numel())).indices
