"""What a task is: how a batch is read, the training loss, the score and how outputs compare.

A task is a `Task` subclass registered by name (`@register_task("name")` in `pruning.tasks`);
the training loops (`pruning.train`), the evaluators (`search.evaluators`), the ASHA selection
and the pipeline (`workers`) call it and stay task-agnostic. The contract, one method each:

- `batch(batch, device) -> (inputs, targets)`: one loader batch, on `device`. `targets` is
  whatever `loss` and the metric read (class indices, masks, a teacher's outputs).
- `outputs(raw) -> Any`: what the task reads of a network's raw outputs (a tensor, or a tuple,
  list or dict of tensors): by default the one named by `output` (`select_output`).
- `loss(outputs, targets) -> Tensor`: the scalar training loss of a batch.
- `kd_loss(outputs, teacher_outputs, temperature) -> Tensor`: the distillation term a fine-tune
  with `kd_alpha > 0` blends in (KL between softened distributions over dim 1 by default).
- `metric() -> Metric`: a fresh accumulator; `update(outputs, targets)` per batch, then
  `compute() -> Score` (`value`, higher is better, named `score_name`; `extras` by name).
- `compare(expected, actual) -> float`: how far two networks' raw outputs are apart, for
  verification (largest absolute difference over every output by default).
- `render(picture, outputs, index) -> Image | None`: a picture of what the network predicts for
  sample `index` of a batch, drawn over its input (`pruning.preview`); None draws nothing.

Class attributes: `name` (the registry key), `score_name` (what reports call the score),
`score_label` (how a page writes that name: "mIoU" for "miou"),
`needs_labels` (False: the data's labels are never read, class folders optional),
`needs_trained_model` (True: a network given without weights cannot be trained for it;
`trained_model_needed(options)` when an option decides), `search_images` (a bound on the
validation images each search candidate is scored on, for a slow score).
A task is built as `cls(output=None, teacher=None, **options)`; its options are declared in
the constructor's signature, typed and bounded, like an evaluator's."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import PruningError

OutputKey = str | int
"""Which of a network's outputs a task reads: a dict output's key, or a position."""


class TaskError(PruningError, ValueError):
    """A task, its options or its output is not one the network or the registry has."""


@dataclass
class Score:
    """A task's score of a network: `value` (higher is better, in the task's units), its
    `name` (`accuracy`, `miou`, `fidelity`) and further figures by name (e.g. pixel accuracy)."""

    value: float
    name: str
    extras: dict[str, float] = field(default_factory=dict)


class Metric(Protocol):
    """Accumulates a score over batches (torchmetrics-like)."""

    def update(self, outputs: Any, targets: Any) -> None: ...

    def compute(self) -> Score: ...


def named_outputs(raw: Any) -> dict[str, torch.Tensor]:
    """A network's outputs by name, in order: a tensor is `{"output": t}`, a tuple or list
    `{"0": t0, "1": t1, ...}`, a dict its own keys (as strings)."""
    if isinstance(raw, torch.Tensor):
        return {"output": raw}
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(raw)]
    else:
        kind = type(raw).__name__
        raise TaskError(f"a network output must be a tensor, or a tuple, list or dict of tensors, not {kind}")
    for k, v in items:
        if not isinstance(v, torch.Tensor):
            raise TaskError(f"network output {k!r} is a {type(v).__name__}, not a tensor")
    return dict(items)


def output_names(raw: Any) -> list[str]:
    """The names `named_outputs` gives a network's outputs, in order."""
    return list(named_outputs(raw))


def output_key(names: list[str], key: OutputKey | None) -> str:
    """The name of the output `key` picks among `names`: None the first, an int by position,
    a str by name (or a position written as digits); anything else is a one-line TaskError."""
    if not names:
        raise TaskError("the network has no outputs")
    if key is None:
        return names[0]
    if isinstance(key, bool):
        raise TaskError(f"task_output must be an output's name or position, not {key!r}")
    if isinstance(key, int):
        if 0 <= key < len(names):
            return names[key]
        raise TaskError(f"task_output {key} is out of range: the network has {len(names)} output(s)")
    if key in names:
        return key
    if key.isdigit() and int(key) < len(names) and names[int(key)] == str(int(key)):
        return names[int(key)]
    raise TaskError(f"task_output {key!r} is not an output of the network; it has: {', '.join(names)}")


def select_output(raw: Any, key: OutputKey | None = None) -> torch.Tensor:
    """The output `key` picks from a network's raw outputs (`output_key`)."""
    outs = named_outputs(raw)
    return outs[output_key(list(outs), key)]


def max_difference(expected: Any, actual: Any) -> float:
    """The largest absolute difference between two networks' outputs, over every output; an
    output missing, renamed or of another shape is infinitely far."""
    a, b = named_outputs(expected), named_outputs(actual)
    if list(a) != list(b):
        return float("inf")
    worst = 0.0
    for k, t in a.items():
        if t.shape != b[k].shape:
            return float("inf")
        if t.numel():
            worst = max(worst, float((t.detach().float() - b[k].detach().float()).abs().max()))
    return worst


def softened_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: KL between distributions softened by `temperature` over dim 1 (the
    class dim; per position for dense outputs), scaled by T^2, averaged over the batch."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t


class Task:
    """Base class of tasks (the module doc gives the contract); subclasses set `name`,
    `score_name` and implement `loss` and `metric`."""

    name: ClassVar[str] = ""
    score_name: ClassVar[str] = ""
    score_label: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = True
    needs_trained_model: ClassVar[bool] = False
    train_warmup_epochs: ClassVar[float] = 0.0
    """The learning-rate warm-up of a training from scratch when the job sets none (epochs)."""
    search_images: ClassVar[int | None] = None
    """The most validation images a search candidate is scored on when the job sets no bound
    (None: the whole split), for tasks whose score is slow per image."""
    per_class_extras: ClassVar[tuple[str, ...]] = ()
    """The extras that are one figure per class, written `<prefix>_<class index>` (a
    segmentation's `iou_2`): `class_scores` names them by class for the report."""

    def class_scores(self, extras: Mapping[str, float], classes: list[str]) -> dict[str, dict[str, float]]:
        """The per-class extras by figure and class name, in the data set's class order
        (`{"iou": {"background": 0.97, "disk": 0.81}}`), so a report reads without an index
        table; a class with no figure (absent from the split) is left out."""
        named: dict[str, dict[str, float]] = {}
        for prefix in self.per_class_extras:
            row = {name: extras[f"{prefix}_{i}"] for i, name in enumerate(classes) if f"{prefix}_{i}" in extras}
            if row:
                named[prefix] = row
        return named

    def __init__(self, output: OutputKey | None = None, teacher: nn.Module | None = None) -> None:
        """`output`: the network output the task reads. `teacher`: the unpruned network, kept
        (as a frozen copy) only by the tasks whose targets or score come from it."""
        self.output = output

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output={self.output!r})"

    @classmethod
    def trained_model_needed(cls, options: Mapping[str, Any]) -> bool:
        """Whether a job with these (checked) options needs the network trained (weights, a
        program or an upload): `needs_trained_model` unless an option changes it."""
        return cls.needs_trained_model

    def candidate_batches(self, val_batches: int | None, batch_size: int) -> int | None:
        """The validation batches (of `batch_size`) a search candidate is scored on: the job's
        `val_batches` when set, else enough for `search_images` (None: the whole split)."""
        if val_batches is not None or self.search_images is None:
            return val_batches
        return max(1, math.ceil(self.search_images / batch_size))

    def cpu(self) -> Task:
        """The task with any network it holds on the CPU (for shipping to another process)."""
        return self

    def batch(self, batch: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, Any]:
        """`(inputs, targets)` of one loader batch `(x, y)`, moved to `device` when given."""
        x, y = batch[0], batch[1]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def outputs(self, raw: Any) -> Any:
        """What the task reads of a network's raw outputs: the output `self.output` names."""
        return select_output(raw, self.output)

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> Any:
        """`outputs(model(inputs))`: the network's outputs as the loss and the metric read them."""
        return self.outputs(model(inputs))

    def check_output(self, raw: Any, input_size: int) -> None:
        """Refuse (a one-line TaskError) a network's raw output on a blank input of `input_size`
        that the task cannot read; by default any output is read."""

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The scalar training loss of one batch."""
        raise NotImplementedError

    def kd_loss(self, outputs: Any, teacher_outputs: Any, temperature: float) -> torch.Tensor:
        """The distillation term blended in with weight `kd_alpha` (`pruning.train.task_loss`)."""
        return softened_kl(outputs, teacher_outputs, temperature)

    def metric(self) -> Metric:
        """A fresh score accumulator."""
        raise NotImplementedError

    def compare(self, expected: Any, actual: Any) -> float:
        """How far two networks' raw outputs are apart (0: equal), for verification."""
        return max_difference(expected, actual)

    def render(self, picture: np.ndarray, outputs: Any, index: int) -> Image.Image | None:
        """Sample `index`'s prediction (`outputs` as `forward` gives them for the batch) drawn
        over its input `picture` (`(H, W, 3)` uint8); None: the task draws no previews."""
        return None


def frozen(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with no gradients."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class TeacherTask(Task):
    """A task that keeps the unpruned network as a frozen teacher (distillation, detection):
    `set_teacher` in the constructor, `teacher_on(device)` where batches are read; the copies
    per device are dropped when the task is shipped to another process or moved to the CPU."""

    missing_teacher: ClassVar[str] = "the task needs the unpruned network as its teacher"

    def set_teacher(self, teacher: nn.Module | None) -> None:
        """Keep a frozen copy of `teacher` (None: no teacher)."""
        self.teacher = None if teacher is None else frozen(teacher)
        self._on_device: dict[str, nn.Module] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on_device": {}}  # the per-device copies are rebuilt where used

    def cpu(self) -> TeacherTask:
        if self.teacher is not None:
            self.teacher = self.teacher.cpu()
        self._on_device = {}
        return self

    def teacher_on(self, device: torch.device | str) -> nn.Module:
        """The frozen teacher on `device` (a copy per device, the original untouched)."""
        if self.teacher is None:
            raise TaskError(self.missing_teacher)
        key = str(device)
        if key not in self._on_device:
            here = next(self.teacher.parameters(), torch.empty(0)).device
            self._on_device[key] = self.teacher if str(here) == key else frozen(self.teacher).to(device)
        return self._on_device[key]
