"""Object detection: boxes `(N, M, 5)` as targets (`pruning.detection`), a detector's one output
`(N, 4+K, A)` (or as the options declare it), scored by COCO's mAP@[.5:.95] (`map`), with
mAP@0.5 (`map50`) and each class's AP (`ap_<class>`) as extras.

The loss is distillation from the unpruned detector's decoded outputs by default (`loss:
distill`), or the labelled loss (`loss: labels`; blended with distillation by the job's
`kd_alpha`); a network trained from scratch (no teacher yet) takes the labelled loss. With
`labels: false` the data's boxes are never read: the loss is distillation and mAP is scored
against the teacher's detections (score >= `TEACHER_SCORE` after NMS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torch import nn

from ..detection import valid
from ..detection.decode import (
    BoxFormat,
    Decoded,
    Detections,
    Layout,
    ScoreKind,
    anchor_count,
    detections,
    split_output,
)
from ..detection.loss import distillation_loss, labelled_loss
from ..detection.metrics import GroundTruth, coco_map
from .base import OutputKey, Score, TaskError, TeacherTask
from .drawing import draw_boxes
from .registry import check_task_options, register_task

TEACHER_SCORE = 0.25
"""The score a teacher's detection needs to count as an object when no labels are read."""

Stride = Annotated[int, Field(ge=1, le=1024)]
LossKind = Literal["distill", "labels"]


@dataclass
class DetectionTargets:
    """What a batch holds for the loss and the metric: the inputs (the teacher's outputs are
    computed from them when first asked for), the objects `(N, M, 5)` (None with `labels:
    false`) and the input size."""

    inputs: torch.Tensor
    boxes: torch.Tensor | None
    task: Detection
    _teacher: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.inputs.shape[-1])

    @property
    def teacher(self) -> torch.Tensor:
        """The teacher's output on the inputs (computed once)."""
        if self._teacher is None:
            with torch.no_grad():
                self._teacher = self.task.forward(self.task.teacher_on(self.inputs.device), self.inputs)
        return self._teacher


@register_task("detection")
class Detection(TeacherTask):
    """Boxes as targets, a detector's raw output as outputs; loss and score as in the module doc."""

    name = "detection"
    score_name = "map"
    score_label = "mAP@[.5:.95]"
    per_class_extras = ("ap",)
    needs_labels = False  # boxes are read from a detection data set; `labels: false` takes plain images
    missing_teacher = "detection without labels needs the unpruned detector as its teacher"
    search_images = 256  # COCO's evaluation runs per image and class in Python
    train_warmup_epochs = 3.0  # YOLOv8 trains with `warmup_epochs: 3` (it also warms momentum and biases)

    def __init__(
        self,
        output: OutputKey | None = None,
        teacher: nn.Module | None = None,
        layout: Layout = "(N,4+K,A)",
        box_format: BoxFormat = "cxcywh",
        scores: ScoreKind = "probabilities",
        strides: Annotated[tuple[Stride, ...], Field(min_length=1, max_length=8)] = (8, 16, 32),
        conf_threshold: Annotated[float, Field(ge=0, lt=1, description="score a detection needs")] = 0.001,
        iou_threshold: Annotated[float, Field(gt=0, le=1, description="class-wise NMS overlap")] = 0.7,
        max_detections: Annotated[int, Field(ge=1, le=1000)] = 100,
        loss: LossKind = "distill",
        labels: bool = True,
        num_classes: Annotated[int | None, Field(ge=1, le=10000, description="K; the job sets the data's")] = None,
    ) -> None:
        super().__init__(output)
        self.layout, self.box_format, self.scores = layout, box_format, scores
        self.strides = tuple(int(s) for s in strides)
        self.conf_threshold, self.iou_threshold = float(conf_threshold), float(iou_threshold)
        self.max_detections = int(max_detections)
        self.loss_kind, self.labels = loss, bool(labels)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.set_teacher(teacher)

    @classmethod
    def trained_model_needed(cls, options: Mapping[str, Any]) -> bool:
        """Without labels the unpruned detector is the only reference: it must come trained."""
        return not options.get("labels", True)

    def batch(self, batch: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, DetectionTargets]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 and self.labels else None
        if y is not None and (not isinstance(y, torch.Tensor) or y.dim() != 3 or y.shape[-1] != 5):
            what = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise TaskError(
                f"the detection task reads boxes (N, M, 5) from the data, not {what}: use a detection "
                "data set, or task option labels: false"
            )
        if device is not None:
            x = x.to(device)
            y = None if y is None else y.to(device)
        return x, DetectionTargets(x, y, self)

    def decode(self, raw: torch.Tensor, input_size: int | None = None) -> Decoded:
        """A raw output as boxes and scores per anchor, checked against the declared layout."""
        anchors = anchor_count(self.strides, input_size) if input_size else None
        return split_output(raw, self.layout, self.box_format, self.scores, self.num_classes, anchors)

    def check_output(self, raw: Any, input_size: int) -> None:
        self.decode(self.outputs(raw), input_size)

    def detections(self, decoded: Decoded, conf_threshold: float | None = None) -> list[Detections]:
        """Each image's detections after the threshold, class-wise NMS and `max_detections`."""
        conf = self.conf_threshold if conf_threshold is None else conf_threshold
        return detections(decoded, conf, self.iou_threshold, self.max_detections)

    def distilling(self) -> bool:
        """Whether the loss is distillation (a teacher and `loss: distill`, or no labels)."""
        return not self.labels or (self.loss_kind == "distill" and self.teacher is not None)

    def loss(self, outputs: Any, targets: DetectionTargets) -> torch.Tensor:
        student = self.decode(outputs, targets.size)
        if self.distilling():
            return distillation_loss(student, self.decode(targets.teacher, targets.size))
        if targets.boxes is None:
            raise TaskError("the detection task's labelled loss needs boxes: the data gave none")
        return labelled_loss(student, targets.boxes, targets.size, self.strides)

    def kd_loss(self, outputs: Any, teacher_outputs: Any, temperature: float) -> torch.Tensor:
        """Distillation from the teacher's decoded outputs (no temperature: scores are sigmoids)."""
        return distillation_loss(self.decode(outputs), self.decode(teacher_outputs))

    def metric(self) -> MeanAP:
        return MeanAP(self)

    def render(self, picture: np.ndarray, outputs: Any, index: int) -> Image.Image:
        """Sample `index`'s detections scored at least `TEACHER_SCORE` (after NMS), boxed and
        labelled with class and score."""
        found = self.detections(self.decode(outputs[index : index + 1]), TEACHER_SCORE)[0].cpu()
        return draw_boxes(picture, found.boxes, found.classes, found.scores)


class MeanAP:
    """COCO mAP over the batches seen (`pruning.detection.metrics.coco_map`), against the data's
    boxes, or the teacher's detections with `labels: false`."""

    def __init__(self, task: Detection) -> None:
        self.task = task
        self.predictions: list[Detections] = []
        self.truths: list[GroundTruth] = []

    def update(self, outputs: torch.Tensor, targets: DetectionTargets) -> None:
        task = self.task
        self.predictions += [d.cpu() for d in task.detections(task.decode(outputs, targets.size))]
        if targets.boxes is not None:
            for t in targets.boxes.detach().cpu():
                ok = valid(t)
                self.truths.append(GroundTruth(t[ok, 1:], t[ok, 0].long()))
        else:
            ref = task.detections(task.decode(targets.teacher, targets.size), TEACHER_SCORE)
            self.truths += [GroundTruth(d.boxes.cpu(), d.classes.cpu()) for d in ref]

    def compute(self) -> Score:
        out = coco_map(self.predictions, self.truths, self.task.max_detections)
        extras = {"map50": out.map50, **{f"ap_{k}": v for k, v in sorted(out.per_class.items())}}
        return Score(out.map, self.task.score_name, extras)


def detection_data(name: str) -> bool:
    """Whether a data set name (`boxfolder:PATH` too) is one with boxes."""
    from ..data import data_task

    return data_task(name.partition(":")[0]) == "detection"


def detection_output_mismatch(shape: Sequence[int], classes: int, options: Mapping[str, Any]) -> str | None:
    """Why a detector whose output is `shape` (without the batch dim) cannot be read with these
    task options against data of `classes` classes (None when it can; classes 0 or `labels:
    false`: no class count to match)."""
    checked = check_task_options(Detection.name, options)
    k = classes if classes and checked.get("labels", True) else None
    raw = torch.empty((1, *(int(s) for s in shape)), device="meta")
    try:
        split_output(raw, checked.get("layout", "(N,4+K,A)"), num_classes=k)
    except TaskError as exc:
        return str(exc)
    return None
