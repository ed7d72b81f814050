"""Distillation: fine-tune and score the pruned network against the unpruned one's outputs.

No labels are read: a batch's targets are the teacher's outputs on its inputs (the unpruned
network, frozen and in eval mode). The loss sums, over every output of the network, the KL
between softened distributions (temperature `temperature`) for a logits output and the
normalised MSE for any other. The score is fidelity, on the task's output: for logits the
top-1 agreement with the teacher (argmax over dim 1, per position for dense logits), for
other outputs 1 - normalised MSE, where normalised MSE = mean((s - t)^2) / var(t) over the
split (0 for a perfect copy; 1 - NMSE goes below 0 for a network worse than predicting the
teacher's mean). An output is logits when `kinds` says so, else when it is 2-D (N x K)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from .base import OutputKey, Score, TeacherTask, named_outputs, output_key, softened_kl
from .registry import register_task

OutputKind = Literal["logits", "features"]
NMSE_EPS = 1e-12


def normalised_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean((s - t)^2) / var(t) over the batch (a scale-free regression loss)."""
    return (student - teacher).pow(2).mean() / (teacher.var(unbiased=False) + NMSE_EPS)


class Fidelity:
    """Agreement with the teacher over the batches seen, per output (see the module doc);
    the score is the task output's, with every output's in `extras` when there are several."""

    def __init__(self, kinds: dict[str, OutputKind], main: str) -> None:
        self.kinds, self.main = kinds, main
        self.agree: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.sse: dict[str, float] = {}
        self.sum: dict[str, float] = {}
        self.sumsq: dict[str, float] = {}

    def update(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        for k, s in outputs.items():
            t = targets[k].to(s.dtype)
            if self.kinds[k] == "logits":
                self.agree[k] = self.agree.get(k, 0) + int((s.argmax(1) == t.argmax(1)).sum())
                self.count[k] = self.count.get(k, 0) + int(s.argmax(1).numel())
            else:
                s64, t64 = s.double(), t.double()
                self.sse[k] = self.sse.get(k, 0.0) + float((s64 - t64).pow(2).sum())
                self.sum[k] = self.sum.get(k, 0.0) + float(t64.sum())
                self.sumsq[k] = self.sumsq.get(k, 0.0) + float(t64.pow(2).sum())
                self.count[k] = self.count.get(k, 0) + int(t.numel())

    def fidelity(self, k: str) -> float:
        n = max(1, self.count.get(k, 0))
        if self.kinds[k] == "logits":
            return self.agree.get(k, 0) / n
        mean = self.sum.get(k, 0.0) / n
        var = max(self.sumsq.get(k, 0.0) / n - mean * mean, 0.0)
        return 1.0 - (self.sse.get(k, 0.0) / n) / (var + NMSE_EPS)

    def compute(self) -> Score:
        extras = {f"fidelity_{k}": self.fidelity(k) for k in self.kinds} if len(self.kinds) > 1 else {}
        return Score(self.fidelity(self.main), "fidelity", extras)


@register_task("distillation")
class Distillation(TeacherTask):
    """Targets are the frozen unpruned network's outputs; loss and score as in the module doc."""

    name = "distillation"
    score_name = "fidelity"
    score_label = "fidelity"
    needs_labels = False
    needs_trained_model = True
    missing_teacher = "the distillation task needs the unpruned network as its teacher"

    def __init__(
        self,
        output: OutputKey | None = None,
        teacher: nn.Module | None = None,
        temperature: Annotated[float, Field(gt=0, le=100, description="softening of logits outputs")] = 4.0,
        kinds: dict[str, OutputKind] | None = None,
    ) -> None:
        super().__init__(output)
        self.temperature = float(temperature)
        self.kinds_given = dict(kinds or {})
        self.set_teacher(teacher)

    def batch(self, batch: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, Any]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if device is not None:
            x = x.to(device)
        with torch.no_grad():
            targets = named_outputs(self.teacher_on(x.device)(x))
        return x, targets

    def outputs(self, raw: Any) -> dict[str, torch.Tensor]:
        return named_outputs(raw)

    def kind(self, name: str, t: torch.Tensor) -> OutputKind:
        """Whether an output is read as logits (KL, agreement) or features (NMSE)."""
        return self.kinds_given.get(name) or ("logits" if t.dim() == 2 and t.shape[1] > 1 else "features")

    def loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), device=next(iter(outputs.values())).device)
        for k, s in outputs.items():
            t = targets[k]
            if self.kind(k, t) == "logits":
                total = total + softened_kl(s, t, self.temperature)
            else:
                total = total + normalised_mse(s, t)
        return total

    def kd_loss(self, outputs: Any, teacher_outputs: Any, temperature: float) -> torch.Tensor:
        return self.loss(outputs, teacher_outputs)

    def metric(self) -> Fidelity:
        return _LazyFidelity(self)


class _LazyFidelity(Fidelity):
    """`Fidelity` whose output kinds and main output are read off the first batch."""

    def __init__(self, task: Distillation) -> None:
        super().__init__({}, "")
        self.task = task

    def update(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        if not self.kinds:
            self.kinds = {k: self.task.kind(k, t) for k, t in targets.items()}
            self.main = output_key(list(targets), self.task.output)
        super().update(outputs, targets)

    def compute(self) -> Score:
        if not self.kinds:
            return Score(0.0, "fidelity")
        return super().compute()
