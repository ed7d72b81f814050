"""Classification: cross-entropy on class indices, scored by top-1 accuracy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Metric, Score, Task
from .registry import register_task


class TopOne:
    """Top-1 accuracy in [0, 1] over the batches seen (argmax over dim 1)."""

    def __init__(self, name: str = "accuracy") -> None:
        self.name = name
        self.correct = 0
        self.total = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        pred = outputs.argmax(1)
        self.correct += int((pred == targets).sum())
        self.total += int(targets.numel())

    def compute(self) -> Score:
        return Score(self.correct / max(1, self.total), self.name)


@register_task("classification")
class Classification(Task):
    """Class indices as targets; cross-entropy loss; top-1 accuracy as the score."""

    name = "classification"
    score_name = "accuracy"
    score_label = "accuracy"

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def metric(self) -> Metric:
        return TopOne(self.score_name)
