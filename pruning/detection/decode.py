"""From a detector's raw output to boxes, scores and per-image detections.

The output contract (`docs`: the detection task): one tensor `(N, 4+K, A)` (or `(N, A, 4+K)`)
holding per anchor a box (`cxcywh` or `xyxy`, input pixels) and K class scores (probabilities
or logits). `split_output` checks the shape against the declared layout and the data's K and
returns boxes `xyxy` `(N, A, 4)` and scores `(N, A, K)`; `detections` turns them into each
image's final detections: confidence threshold, class-wise NMS, then the `max_detections`
highest. A class score is a candidate on its own (an anchor may give boxes of several classes),
as YOLOv8's validation does."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..tasks.base import TaskError
from .ops import batched_nms, cxcywh_to_xyxy, topk_per_image

Layout = Literal["(N,4+K,A)", "(N,A,4+K)"]
BoxFormat = Literal["cxcywh", "xyxy"]
ScoreKind = Literal["probabilities", "logits"]

MAX_CANDIDATES = 3000
"""The most (anchor, class) candidates per image that go into NMS, the highest scored."""


@dataclass
class Detections:
    """One image's detections: `boxes` `xyxy` `(n, 4)`, `scores` `(n,)`, `classes` `(n,)` long."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)

    def cpu(self) -> Detections:
        return Detections(self.boxes.detach().cpu(), self.scores.detach().cpu(), self.classes.detach().cpu())


@dataclass
class Decoded:
    """A batch's output read per anchor: `boxes` `xyxy` `(N, A, 4)` in input pixels and
    `scores` `(N, A, K)` as the network gives them (`logits` True: before the sigmoid)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    logits: bool

    @property
    def probabilities(self) -> torch.Tensor:
        """The class scores in [0, 1]."""
        return self.scores.sigmoid() if self.logits else self.scores


def anchor_count(strides: Sequence[int], input_size: int) -> int:
    """How many anchors a YOLO-style head with these strides has on a square input."""
    return sum(math.ceil(input_size / s) ** 2 for s in strides)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def split_output(
    raw: torch.Tensor,
    layout: Layout = "(N,4+K,A)",
    box_format: BoxFormat = "cxcywh",
    scores: ScoreKind = "probabilities",
    num_classes: int | None = None,
    num_anchors: int | None = None,
) -> Decoded:
    """A raw output as boxes and scores per anchor; a one-line TaskError when it is not the
    declared layout: not 3-D, fewer than 5 rows per anchor, 4+K rows where the data has
    another K (`num_classes`), or its dims the other way round (anchors where the rows should
    be, told by `num_classes` or the expected `num_anchors`)."""
    if not isinstance(raw, torch.Tensor) or raw.dim() != 3:
        what = _shape(raw) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise TaskError(f"the detection output must be a 3-D tensor {layout}, but the network gives {what}")
    rows_dim, anchors_dim = (1, 2) if layout == "(N,4+K,A)" else (2, 1)
    rows, anchors = int(raw.shape[rows_dim]), int(raw.shape[anchors_dim])
    swapped = (num_classes is not None and rows != 4 + num_classes and anchors == 4 + num_classes) or (
        num_classes is None and num_anchors is not None and rows == num_anchors and anchors != num_anchors
    )
    if swapped:
        other = "(N,A,4+K)" if layout == "(N,4+K,A)" else "(N,4+K,A)"
        raise TaskError(
            f"the detection output {_shape(raw)} is laid out {other}, not {layout}: give task option layout: {other!r}"
        )
    if num_classes is not None and rows != 4 + num_classes:
        raise TaskError(
            f"the detection output {_shape(raw)} has {rows} rows per anchor (4+K, K = {rows - 4}), but the data "
            f"has {num_classes} classes"
        )
    if rows < 5:
        raise TaskError(f"the detection output {_shape(raw)} has {rows} rows per anchor; it needs 4 box rows + K >= 1")
    per_anchor = raw.transpose(1, 2) if layout == "(N,4+K,A)" else raw
    boxes = per_anchor[..., :4]
    if box_format == "cxcywh":
        boxes = cxcywh_to_xyxy(boxes)
    return Decoded(boxes, per_anchor[..., 4:], scores == "logits")


def detections(
    decoded: Decoded,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.7,
    max_detections: int = 100,
    max_candidates: int = MAX_CANDIDATES,
) -> list[Detections]:
    """Each image's detections: the (anchor, class) pairs scored above `conf_threshold` (the
    `max_candidates` highest), class-wise NMS at `iou_threshold`, the `max_detections` highest."""
    probs = decoded.probabilities.detach()
    boxes_all = decoded.boxes.detach()
    out = []
    for boxes, p in zip(boxes_all, probs, strict=True):
        anchor, cls = (p > conf_threshold).nonzero(as_tuple=True)
        s = p[anchor, cls]
        if len(s) > max_candidates:
            top = topk_per_image(s, max_candidates)
            anchor, cls, s = anchor[top], cls[top], s[top]
        b = boxes[anchor].float()
        keep = batched_nms(b, s.float(), cls, iou_threshold, max_detections)
        out.append(Detections(b[keep], s[keep].float(), cls[keep]))
    return out
