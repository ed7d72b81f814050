"""Semantic segmentation: per-pixel class masks as targets (255 ignored), per-pixel
cross-entropy, scored by mean IoU (`pruning.segmentation.metrics`); pixel accuracy and each
class's IoU are the score's extras. A network may output logits at a lower resolution than the
masks: they are resized bilinearly to the mask for the loss and the scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..segmentation.metrics import SegmentationScores, match_logits, segmentation_loss
from .base import Metric, Score, Task, softened_kl
from .drawing import PALETTE
from .registry import register_task


class MeanIoU:
    """mIoU over the batches seen; the number of classes is read from the logits (dim 1) of
    the first batch."""

    def __init__(self, name: str = "miou") -> None:
        self.name = name
        self.scores: SegmentationScores | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.scores is None:
            self.scores = SegmentationScores(int(outputs.shape[1]))
        self.scores.update(outputs, targets)

    def compute(self) -> Score:
        if self.scores is None:
            return Score(0.0, self.name)
        out = self.scores.compute()
        extras = {"pixel_accuracy": out["pixel_accuracy"]}
        extras.update({f"iou_{k}": v for k, v in enumerate(out["per_class_iou"]) if v is not None})
        return Score(out["miou"], self.name, extras)


@register_task("segmentation")
class Segmentation(Task):
    """Masks `(N, H, W)` as targets; logits `(N, K, h, w)` as outputs."""

    name = "segmentation"
    score_name = "miou"
    score_label = "mIoU"
    per_class_extras = ("iou",)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return segmentation_loss(outputs, targets)

    def kd_loss(self, outputs: Any, teacher_outputs: Any, temperature: float) -> torch.Tensor:
        """The softened KL per pixel, averaged over pixels (not summed), so it weighs like the
        per-pixel cross-entropy it is blended with."""
        teacher = match_logits(teacher_outputs, outputs[:, 0])
        return softened_kl(outputs, teacher, temperature) / max(1, outputs.shape[-2] * outputs.shape[-1])

    def metric(self) -> Metric:
        return MeanIoU(self.score_name)

    def render(self, picture: np.ndarray, outputs: Any, index: int) -> Image.Image:
        """Each pixel's predicted class as a colour over the picture (class 0, usually the
        background, left uncoloured)."""
        h, w = picture.shape[:2]
        logits = F.interpolate(outputs[index : index + 1].float(), size=(h, w), mode="bilinear", align_corners=False)
        classes = logits[0].argmax(0).cpu().numpy()
        colours = PALETTE[classes % len(PALETTE)]
        shown = np.where((classes > 0)[..., None], 0.45 * picture + 0.55 * colours, picture)
        return Image.fromarray(shown.round().astype(np.uint8))


def task_data_mismatch(
    task: str, segmentation_data: bool, detection_data: bool = False, options: Mapping[str, Any] | None = None
) -> str | None:
    """Why a job's task cannot read its data (None when it can): the segmentation task needs
    masks, the detection task boxes (or its option `labels: false`, which reads only images), a
    task that reads class labels a labelled (not a segmentation or detection) set; a task that
    reads no labels (distillation) takes any."""
    from .registry import task_class

    if task == "detection":
        if detection_data or (options or {}).get("labels") is False:
            return None
        return (
            "the detection task needs a detection data set (boxscenes, boxfolder, or an uploaded COCO or YOLO "
            "archive), or task option labels: false to score against the unpruned detector"
        )
    if task == Segmentation.name and not segmentation_data:
        return (
            "the segmentation task needs a segmentation data set (scenes, maskfolder, or an uploaded "
            "images/ + masks/ archive)"
        )
    if task != Segmentation.name and task_class(task).needs_labels and (segmentation_data or detection_data):
        kind = "segmentation" if segmentation_data else "detection"
        return f"the {task} task needs class labels, and the data set is a {kind} set (give task: {kind})"
    return None
