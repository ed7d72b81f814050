"""The segmentation loss and scores.

The loss is per-pixel cross-entropy that skips `IGNORE` pixels; a network whose logits come out
at a lower resolution than the mask (an output stride of 4 or 8) has them resized bilinearly to
the mask first, so the loss and the scores are always taken at the mask's resolution.

The scores are torchmetrics' (`MulticlassJaccardIndex`, `MulticlassAccuracy`, both with
`ignore_index=IGNORE`): a kept, widely used implementation whose conventions are the usual
ones (the mean IoU averages over the classes present in the prediction or the ground truth;
a class absent from both has no IoU), rather than a count of our own to get subtly wrong."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import IGNORE


def match_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(N, K, h, w)` logits resized bilinearly to the mask's `(H, W)` when they differ."""
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=tuple(mask.shape[-2:]), mode="bilinear", align_corners=False)
    return logits


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels of `mask` `(N, H, W)` that are not `IGNORE`."""
    return F.cross_entropy(match_logits(logits, mask), mask.long(), ignore_index=IGNORE)


class SegmentationScores:
    """Running mIoU, pixel accuracy and per-class IoU over batches (`update`, then `compute`)."""

    def __init__(self, num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        self.num_classes = num_classes
        self.iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=IGNORE, zero_division=float("nan"))
        self.miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE)
        self.accuracy = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)

    def update(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a batch: logits `(N, K, h, w)` (any resolution) and masks `(N, H, W)`."""
        pred = match_logits(logits.detach(), mask).argmax(1).cpu()
        target = mask.long().cpu()
        for metric in (self.iou, self.miou, self.accuracy):
            metric.update(pred, target)

    def compute(self) -> dict[str, Any]:
        """`{"miou", "pixel_accuracy", "per_class_iou"}`; a class absent from both prediction
        and ground truth has IoU None (and does not count in the mean)."""
        per_class = [None if math.isnan(v) else float(v) for v in self.iou.compute().tolist()]
        return {
            "miou": float(self.miou.compute()),
            "pixel_accuracy": float(self.accuracy.compute()),
            "per_class_iou": per_class,
        }


@torch.no_grad()
def segmentation_scores(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """The scores of `model` (put in eval mode, on its own device unless given) over batches of
    `(images, masks)`."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    scores = SegmentationScores(num_classes)
    for i, (x, mask) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        scores.update(model(x.to(dev)), mask)
    return scores.compute()
