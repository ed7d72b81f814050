"""Tasks (`pruning.tasks`): the registry behind the job's `task` field, classification as the
training loops' and evaluators' default, and distillation against the unpruned network."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torch.utils.data import TensorDataset

from pruning.data import DataSplits
from pruning.tasks import (
    TASKS,
    TaskError,
    list_tasks,
    make_task,
    max_difference,
    named_outputs,
    output_key,
    select_output,
)
from pruning.tasks.distillation import normalised_mse
from pruning.train import FinetuneConfig, evaluate, evaluate_score, finetune, task_loss
from search.evaluators import EvalContext, make_evaluator
from workers.config import JobConfig

BASE = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
}


class TwoHeads(nn.Module):
    """A tiny net with a dict output: logits and a feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)
        self.aux = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"out": self.head(h.mean((2, 3))), "aux": self.aux(h)}


def _unlabelled(x: torch.Tensor) -> TensorDataset:
    """Images with NaN labels: any loss or score that read them would fail or be NaN."""
    return TensorDataset(x, torch.full((len(x),), float("nan")))


def test_the_registry_lists_classification_first_and_refuses_unknown_names_in_one_line() -> None:
    names = list_tasks()
    assert names[0] == "classification"
    assert "distillation" in names
    assert list(TASKS) == names
    with pytest.raises(TaskError) as err:
        make_task("no-such-task")
    assert "\n" not in str(err.value)
    assert "classification" in str(err.value)


def test_the_job_config_takes_its_task_names_from_the_registry() -> None:
    cfg = JobConfig.model_validate(BASE)
    assert (cfg.task, cfg.task_output, cfg.task_options) == ("classification", None, {})
    assert JobConfig.model_json_schema()["properties"]["task"]["enum"] == list_tasks()
    for bad in (
        {"task": "nope"},
        {"task_output": -1},
        {"task_output": True},
        {"task_output": [0]},
        {"task_output": ""},
        {"task_options": {"temperature": 2.0}},  # classification takes none
        {
            "task": "distillation",
            "model": {"zoo": "convnet", "weights": "w.safetensors"},
            "task_options": {"temperature": 0},
        },
        {
            "task": "distillation",
            "model": {"zoo": "convnet", "weights": "w.safetensors"},
            "task_options": {"kinds": {"a": "x"}},
        },
        {"task": "distillation"},  # nothing trained to distil from
    ):
        with pytest.raises(ValidationError) as err:
            JobConfig.model_validate({**BASE, **bad})
        assert err.value.error_count() == 1, bad
    ok = JobConfig.model_validate(
        {
            **BASE,
            "model": {"zoo": "convnet", "weights": "w.safetensors"},
            "task": "distillation",
            "task_output": "aux",
            "task_options": {"temperature": 2},
        }
    )
    assert ok.task_options == {"temperature": 2.0}
    assert ok.task_output == "aux"


def test_outputs_are_named_and_picked_by_name_or_position() -> None:
    t = torch.zeros(2, 3)
    assert list(named_outputs(t)) == ["output"]
    assert list(named_outputs((t, t + 1))) == ["0", "1"]
    assert list(named_outputs({"out": t, "aux": t + 1})) == ["out", "aux"]
    assert select_output({"out": t, "aux": t + 1}, "aux").sum() == 6
    assert select_output({"out": t, "aux": t + 1}, 1).sum() == 6
    assert select_output((t, t + 1), "1").sum() == 6
    assert select_output({"out": t, "aux": t + 1}).sum() == 0
    for key in ("main", 2, "5"):
        with pytest.raises(TaskError, match=r"out, aux|2 output"):
            output_key(["out", "aux"], key)
    with pytest.raises(TaskError):
        named_outputs([t, "x"])
    assert max_difference({"out": t}, {"out": t + 1e-5}) == pytest.approx(1e-5)
    assert max_difference({"out": t}, {"main": t}) == float("inf")
    assert max_difference((t,), (t[:1],)) == float("inf")


def test_classification_is_cross_entropy_and_top1_accuracy() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 4, (40,))
    task = make_task("classification")
    assert torch.allclose(task_loss(net, x, y, task=task), F.cross_entropy(net(x), y))
    expected = float((net(x).argmax(1) == y).float().mean())
    score = evaluate_score(net, TensorDataset(x, y), batch_size=7)
    assert (score.name, score.extras) == ("accuracy", {})
    assert score.value == pytest.approx(expected)
    assert evaluate(net, TensorDataset(x, y), batch_size=7, task=task) == pytest.approx(expected)


def test_classification_reads_the_output_it_is_told_to() -> None:
    torch.manual_seed(0)
    net = TwoHeads()
    x = torch.randn(12, 1, 5, 5)
    y = net(x)["out"].argmax(1)
    assert evaluate(net, TensorDataset(x, y), task=make_task("classification", output="out")) == 1.0
    assert evaluate(net, TensorDataset(x, y)) == 1.0  # the first output by default


def test_distillation_of_the_teacher_itself_is_perfect_and_reads_no_labels() -> None:
    torch.manual_seed(0)
    teacher = TwoHeads().eval()
    data = _unlabelled(torch.randn(30, 1, 6, 6))
    task = make_task("distillation", teacher=teacher)
    score = evaluate_score(copy.deepcopy(teacher), data, batch_size=8, task=task)
    assert score.name == "fidelity"
    assert score.value == pytest.approx(1.0)
    assert set(score.extras) == {"fidelity_out", "fidelity_aux"}
    assert score.extras["fidelity_aux"] == pytest.approx(1.0, abs=1e-6)
    x, targets = task.batch(next(iter(torch.utils.data.DataLoader(data, batch_size=8))))
    assert float(task_loss(teacher, x, targets, task=task).detach()) == pytest.approx(0.0, abs=1e-6)
    other = TwoHeads()
    worse = evaluate_score(other, data, batch_size=8, task=task)
    assert worse.value < 1.0
    assert worse.extras["fidelity_aux"] < 0.9
    aux = evaluate_score(other, data, batch_size=8, task=make_task("distillation", output="aux", teacher=teacher))
    assert aux.value == pytest.approx(worse.extras["fidelity_aux"])


def test_distillation_keeps_a_frozen_copy_of_its_teacher() -> None:
    teacher = TwoHeads().train()
    before = copy.deepcopy(teacher.state_dict())
    task = make_task("distillation", teacher=teacher)
    assert task.teacher is not teacher
    assert not task.teacher.training
    assert not any(p.requires_grad for p in task.teacher.parameters())
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)  # the job's own network changing does not move the targets
    x = torch.randn(4, 1, 5, 5)
    _, targets = task.batch((x, torch.zeros(4)))
    fresh = TwoHeads()
    fresh.load_state_dict(before)
    assert torch.allclose(targets["out"], fresh.eval()(x)["out"])
    with pytest.raises(TaskError, match="teacher"):
        make_task("distillation").batch((x, torch.zeros(4)))


def test_distillation_loss_is_kl_for_logits_and_normalised_mse_for_features() -> None:
    torch.manual_seed(0)
    s = {"out": torch.randn(8, 3), "aux": torch.randn(8, 2, 4, 4)}
    t = {"out": torch.randn(8, 3), "aux": torch.randn(8, 2, 4, 4) * 3}
    task = make_task("distillation", temperature=2.0)
    kl = F.kl_div(F.log_softmax(s["out"] / 2, 1), F.softmax(t["out"] / 2, 1), reduction="batchmean") * 4
    nmse = ((s["aux"] - t["aux"]) ** 2).mean() / t["aux"].var(unbiased=False)
    assert float(task.loss(s, t)) == pytest.approx(float(kl + nmse), rel=1e-5)
    assert float(normalised_mse(t["aux"] * 1, t["aux"])) == 0.0
    as_features = make_task("distillation", kinds={"out": "features"})
    assert float(as_features.loss(s, t)) == pytest.approx(float(normalised_mse(s["out"], t["out"]) + nmse), rel=1e-5)


def _digits_splits(digits, n: int = 256) -> DataSplits:
    return dataclasses.replace(digits, train=torch.utils.data.Subset(digits.train, range(n)))


def test_a_fine_tune_on_the_distillation_task_brings_a_damaged_copy_back_to_its_teacher(digits) -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(digits.input_size**2, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(3.0)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[3].weight.add_(torch.randn_like(student[3].weight))
    task = make_task("distillation", teacher=teacher)
    start = evaluate(student, digits.val, task=task)
    out = finetune(student, _digits_splits(digits), FinetuneConfig(epochs=3, lr=0.02), device="cpu", task=task)
    assert out.best_val > start + 0.1
    assert evaluate(student, digits.val, task=task) == pytest.approx(out.best_val)


def test_evaluators_score_by_the_context_task(digits) -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(digits.input_size**2, 10))
    ctx = EvalContext(
        model=teacher,
        data=digits,
        input_shape=(1, digits.input_size, digits.input_size),
        task=make_task("distillation", teacher=teacher),
    )
    ev = make_evaluator("plain", ctx)
    assert ev.validate(teacher) == pytest.approx(1.0)
    assert EvalContext(model=teacher, data=digits, input_shape=(1, 16, 16)).task.name == "classification"


def test_evaluation_workers_get_the_job_task(digits) -> None:
    """The Ray evaluation actors rebuild the context from a payload: the task travels in it."""
    from workers.executor import EvalWorker, base_payload

    teacher = nn.Sequential(nn.Flatten(), nn.Linear(digits.input_size**2, 10))
    ctx = EvalContext(
        model=teacher,
        data=digits,
        input_shape=(1, digits.input_size, digits.input_size),
        task=make_task("distillation", teacher=teacher),
    )
    worker = EvalWorker(base_payload(make_evaluator("plain", ctx), {}))
    shipped = worker.pool.default.context.task
    assert shipped is not None
    assert shipped.name == "distillation"
    assert worker.pool.default.validate(teacher) == pytest.approx(1.0)
