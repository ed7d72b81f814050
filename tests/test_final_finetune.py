"""The returned model keeps what the search found: the final fine-tune starts from the weights
the chosen candidate's evaluator scored, and a model that ends below its search score says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers import pipeline
from workers.sink import JobSink

BASE = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
    "train": {"epochs": 1},
    "onnx": False,
}


class Events(JobSink):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def event(self, kind, message, data=None) -> None:
        self.events.append((kind, message, dict(data or {})))


def test_the_fine_tune_starts_from_the_weights_the_evaluator_fine_tuned(tmp_path: Path) -> None:
    config = {**BASE, "evaluator": {"name": "finetune", "options": {"steps": 30}}, "finetune": {"max_steps": 0}}
    summary = pipeline.run_pipeline(config, tmp_path / "a")
    assert summary["finetune_start"] == "finetune"
    # no further training: the returned network is exactly the one the search scored (its 30
    # fine-tune steps included), not the cut network with BN recalibrated
    assert summary["val_accuracy_after"] == summary["search_score"]
    plain = pipeline.run_pipeline({**config, "evaluator": {"name": "adaptive-bn"}}, tmp_path / "b")
    assert plain["val_accuracy_after"] == plain["search_score"]
    assert summary["search_score"] != plain["search_score"]


def test_a_model_below_its_search_score_is_reported_with_both_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.finetune_model

    def ruined(pruned, *args, **kwargs):
        for p in pruned.parameters():  # a fine-tune gone wrong
            p.data.zero_()
        return real(pruned, *args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_model", ruined)
    sink = Events()
    summary = pipeline.run_pipeline({**BASE, "finetune": {"max_steps": 0}}, tmp_path, sink)
    assert summary["val_accuracy_after"] < summary["search_score"]
    warnings = [e for e in sink.events if e[0] == "warning"]
    assert len(warnings) == 1
    assert warnings[0][2] == {
        "val_accuracy_after": summary["val_accuracy_after"],
        "search_score": summary["search_score"],
    }
    assert f"{summary['search_score']:.4f}" in summary["warning"]
    assert f"{summary['val_accuracy_after']:.4f}" in summary["warning"]


def test_a_search_capped_by_max_candidates_still_returns_its_best(tmp_path: Path) -> None:
    # EagleEye is not done after two candidates: the cap ends the search, not the job
    config = {**BASE, "strategy": {"name": "eagleeye"}, "search": {"max_candidates": 2}, "finetune": {"max_steps": 5}}
    summary = pipeline.run_pipeline(config, tmp_path)
    assert summary["candidates"] == 2
    assert summary["flops_after"] <= 0.5 * summary["flops_before"]
    assert (tmp_path / "model.safetensors").is_file()


def test_training_and_fine_tune_progress_say_the_epoch_and_the_validation_score(tmp_path: Path) -> None:
    """A long training watched on the dashboard shows whether it learns: each validation's
    progress label names the epoch and the task's score, for training and the fine-tune alike."""
    import re

    class Progress(JobSink):
        def __init__(self) -> None:
            self.labels: list[tuple[str, str | None]] = []

        def progress(self, phase, fraction, label=None) -> None:
            self.labels.append((phase, label))

    sink = Progress()
    summary = pipeline.run_pipeline({**BASE, "finetune": {"max_steps": 20, "eval_every": 10}}, tmp_path, sink)
    pattern = re.compile(r"epoch [0-9.]+: validation accuracy (0\.[0-9]{4}|1\.0000)")
    train = [label for phase, label in sink.labels if phase == "train"]
    tuned = [label for phase, label in sink.labels if phase == "finetune"]
    assert train
    assert tuned
    assert all(label is not None and pattern.fullmatch(label) for label in train + tuned)
    assert tuned[-1].endswith(f"{summary['val_accuracy_after']:.4f}")
