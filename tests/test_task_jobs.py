"""Tasks through whole jobs: a classification job's report names its task and score and is
otherwise what it was; a distillation job on digits images without class folders (no labels
to read) fine-tunes and scores the pruned network against the unpruned one; a network with
two outputs is pruned with both kept, exported under their names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from corpus.heads import AuxHeadNet
from PIL import Image

from pruning.export import load_model, load_weights
from pruning.models import build_model
from pruning.tasks import make_task, named_outputs
from pruning.train import evaluate
from workers.feasibility import Refused
from workers.pipeline import prune_module, run_pipeline

JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
    "train": {"epochs": 1},
    "finetune": {"max_steps": 40},
    "onnx": False,
}
# The summary of a classification job before tasks existed, key for key (report.json adds
# config and space); tasks add `task` and `score_name` and nothing else.
SUMMARY_KEYS = [
    "status",
    "strategy",
    "evaluator",
    "criterion",
    "target",
    "budget",
    "model",
    "data",
    "dataset",
    "policy",
    "kept_channels",
    "original_channels",
    "layer_channels",
    "pinned_groups",
    "accuracy_before",
    "base_training",
    "accuracy_pruned",
    "accuracy_after",
    "val_accuracy_after",
    "search_score",
    "finetune_start",
    "finetune_schedule",
    "finetune_steps",
    "finetune_stopped_early",
    "finetune_rounds",
    "flops_before",
    "flops_after",
    "params_before",
    "params_after",
    "memory_bytes_before",
    "memory_bytes_after",
    "latency_ms_before",
    "latency_ms_after",
    "latency_ms_predicted",
    "runtime",
    "candidates",
    "search_seconds",
    "candidates_per_second",
    "pareto",
    "device",
    "seed",
    "out_dir",
    "files",
]


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A classification job on digits (its trained convnet is the distillation's teacher)."""
    out = tmp_path_factory.mktemp("classification")
    return run_pipeline(JOB, out), out


def test_a_classification_report_names_its_task_and_is_otherwise_unchanged(classified, digits) -> None:
    summary, out = classified
    report = json.loads((out / "report.json").read_text())
    assert sorted(summary) == sorted([*SUMMARY_KEYS, "task", "score_name"])
    assert sorted(report) == sorted([*SUMMARY_KEYS, "task", "score_name", "config", "space"])
    assert (report["task"], report["score_name"]) == ("classification", "accuracy")
    assert (report["config"]["task"], report["config"]["task_output"]) == ("classification", None)
    # the score is still top-1 accuracy on the test split, computed here by hand
    model = load_model(out)
    x = torch.stack([digits.test[i][0] for i in range(len(digits.test))])
    y = torch.tensor([int(digits.test[i][1]) for i in range(len(digits.test))])
    with torch.no_grad():
        top1 = float((model(x).argmax(1) == y).float().mean())
    assert report["accuracy_after"] == pytest.approx(top1)


def _unlabelled_digits(root: Path, digits, n: int = 400) -> Path:
    """The first `n` digits training images as PNGs in one folder: no class folders."""
    root.mkdir(parents=True)
    for i in range(n):
        x = digits.train[i][0][0]
        img = ((x - x.min()) / (x.max() - x.min() + 1e-9) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(np.asarray(img), mode="L").save(root / f"{i:04d}.png")
    return root


def test_a_distillation_job_on_images_without_labels(classified, digits, tmp_path: Path) -> None:
    _, teacher_dir = classified
    images = _unlabelled_digits(tmp_path / "images", digits)
    job = {
        **JOB,
        "model": {"zoo": "convnet", "weights": str(teacher_dir / "base_model.safetensors")},
        "data": {"name": "imagefolder", "path": str(images), "input_size": 16, "augment": False},
        "task": "distillation",
        "finetune": {"max_steps": 60, "eval_every": 20},
        "onnx": True,
    }
    summary = run_pipeline(job, tmp_path / "out")
    assert (summary["task"], summary["score_name"]) == ("distillation", "fidelity")
    assert summary["dataset"]["classes"] == []
    assert summary["accuracy_before"] == pytest.approx(1.0)  # the teacher agrees with itself
    assert 0.0 <= summary["accuracy_pruned"] <= summary["accuracy_before"]
    assert summary["flops_after"] <= 0.5 * summary["flops_before"]
    # the fine-tune kept its best validation fidelity, which is the reported one
    assert summary["val_accuracy_after"] >= summary["search_score"] - 1e-9
    # fidelity is top-1 agreement with the unpruned network, recomputed here
    from pruning.data import load_dataset
    from pruning.imagefolder import Normalization

    facts = json.loads((tmp_path / "out" / "data.json").read_text())
    data = load_dataset(
        "imagefolder",
        path=images,
        input_size=16,
        augment=False,
        labels=False,
        normalization=Normalization.from_dict(facts["normalization"]),
    )
    teacher = load_weights(build_model("convnet"), teacher_dir / "base_model.safetensors").eval()  # unpruned
    student = load_model(tmp_path / "out")
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        agree = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    assert summary["accuracy_after"] == pytest.approx(agree)
    assert evaluate(student, data.test, task=make_task("distillation", teacher=teacher)) == pytest.approx(agree)


def test_a_network_with_two_outputs_is_pruned_keeping_both(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = AuxHeadNet().eval()
    spec = {
        "data": {"name": "synthetic", "input_size": 32},
        "target": {"flops": 0.5},
        "strategy": {"name": "uniform"},
        "finetune": {"max_steps": 5},
        "search": {"calibration_batches": 1, "val_batches": 1, "max_candidates": 2},
        "task_output": "aux",
    }
    summary = prune_module(net, torch.randn(2, 3, 32, 32), spec, tmp_path)
    assert summary["flops_after"] <= 0.55 * summary["flops_before"]
    assert summary["layer_channels"]["head"] == [10, 10]  # each head's outputs kept whole
    assert summary["layer_channels"]["aux_fc"] == [10, 10]
    x = torch.randn(3, 3, 32, 32)
    returned = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        y = returned(x)
    assert list(named_outputs(y)) == ["out", "aux"]
    assert all(t.shape == (3, 10) for t in named_outputs(y).values())
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["out", "aux"]
    for name, got in zip(["out", "aux"], sess.run(None, {"input": x.numpy()}), strict=True):
        torch.testing.assert_close(torch.from_numpy(got), y[name], atol=1e-4, rtol=1e-4)
    with pytest.raises(Refused, match="task_output 'main' is not an output of the network; it has: out, aux") as exc:
        prune_module(net, torch.randn(2, 3, 32, 32), {**spec, "task_output": "main"}, tmp_path / "bad")
    # the job refuses it in the words the submit uses
    assert (
        exc.value.line == "task_output 'main' is not an output of the network; it has: out, aux"
    )  # as the submit says
