"""Iterative pruning (`finetune.prune_schedule: iterative`): the chosen widths are reached in
`rounds` cuts along a geometric path, each followed by its share of the same fine-tune budget;
each round is a phase with events and a saved network, so a stopped run resumes at the round
it reached and ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruning.errors import PruningError
from pruning.schedule import geometric_path, split_budget
from workers import pipeline
from workers.pipeline import run_pipeline
from workers.sink import FileSink, read_resume

pytestmark = pytest.mark.usefixtures("one_thread")

JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.4},
    "strategy": {"name": "uniform"},
    "train": {"epochs": 1},
    "finetune": {"epochs": 1, "prune_schedule": "iterative", "rounds": 3},
    "onnx": False,
}


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_the_path_shrinks_geometrically_to_the_final_widths() -> None:
    original, final = {"a": 64, "b": 32, "c": 16}, {"a": 8, "b": 32, "c": 3}
    path = geometric_path(original, final, 3)
    assert path[-1] == final
    for before, after in zip([original, *path], path, strict=False):
        assert all(after[k] <= before[k] for k in original)  # never grows back
    assert [p["a"] for p in path] == [32, 16, 8]  # the same share (1/2) kept at each cut
    assert [p["b"] for p in path] == [32, 32, 32]
    assert geometric_path(original, final, 1) == [final]
    with pytest.raises(PruningError):
        geometric_path(original, {**final, "a": 0}, 2)
    assert split_budget(10, 3) == [4, 3, 3]
    assert sum(split_budget(7, 7)) == 7
    assert split_budget(2, 3) == [1, 1, 0]


def test_iterative_budgets_decrease_to_the_target_with_the_one_shot_budget(tmp_path: Path) -> None:
    summary = run_pipeline(JOB, tmp_path / "it", FileSink(tmp_path / "it"))
    one = run_pipeline({**JOB, "finetune": {"epochs": 1}}, tmp_path / "one")
    rounds = summary["finetune_rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    flops = [r["flops"] for r in rounds]
    assert flops == sorted(flops, reverse=True)
    assert flops[0] > flops[-1]
    budget = summary["budget"]
    assert flops[0] > budget >= flops[-1]  # intermediate networks above the target, the last meets it
    assert summary["flops_after"] <= budget  # the returned network meets it
    assert summary["kept_channels"] == rounds[-1]["kept"] == one["kept_channels"]  # the searched widths
    # the same total fine-tune: the rounds' steps add up to one-shot's (one epoch of digits)
    assert summary["finetune_steps"] == one["finetune_steps"] == sum(r["budget_steps"] for r in rounds)
    assert summary["finetune_schedule"] == "iterative"
    assert one["finetune_schedule"] == "one-shot"
    # each round is a phase with its events; the resume-only networks are gone once done
    ev = events(tmp_path / "it")
    assert [e["data"]["round"] for e in ev if e["kind"] == "phase" and e["data"]["phase"] == "finetune"] == [1, 2, 3]
    assert [e["data"]["round"] for e in ev if e["kind"] == "round"] == [1, 2, 3]
    assert not (tmp_path / "it" / pipeline.ROUNDS_DIR).exists()


def test_patience_budgets_split_over_rounds(tmp_path: Path) -> None:
    job = {**JOB, "finetune": {"max_steps": 50, "eval_every": 10, "prune_schedule": "iterative", "rounds": 4}}
    summary = run_pipeline(job, tmp_path)
    assert [r["budget_steps"] for r in summary["finetune_rounds"]] == [13, 13, 12, 12]
    assert summary["finetune_steps"] <= 50


def test_rounds_distil_from_the_unpruned_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, float]] = []
    real = pipeline.finetune

    def spy(model, data, config=None, teacher=None, device="auto", progress=None, task=None):
        seen.append((teacher is not None, config.kd_alpha))
        return real(model, data, config, teacher=teacher, device=device, progress=progress, task=task)

    monkeypatch.setattr(pipeline, "finetune", spy)
    job = {**JOB, "finetune": {**JOB["finetune"], "kd_alpha": 0.5, "rounds": 2}}
    run_pipeline(job, tmp_path)
    assert seen == [(True, 0.5), (True, 0.5)]


class StopAfterRound(FileSink):
    """Asks to stop once `n` rounds have finished."""

    def __init__(self, out: Path, n: int) -> None:
        super().__init__(out)
        self.n, self.finished = n, 0

    def event(self, kind, message, data=None) -> None:
        super().event(kind, message, data)
        self.finished += kind == "round"

    def should_stop(self) -> bool:
        return self.finished >= self.n


def test_a_run_stopped_between_rounds_resumes_at_the_round_it_reached(tmp_path: Path) -> None:
    whole = run_pipeline(JOB, tmp_path / "whole", FileSink(tmp_path / "whole"))
    out = tmp_path / "stopped"
    first = run_pipeline(JOB, out, StopAfterRound(out, 1))
    assert first["status"] == "stopped"
    assert (out / pipeline.ROUNDS_DIR / "round-1" / "round.json").exists()
    done = run_pipeline(JOB, out, FileSink(out), resume=read_resume(out))
    assert done["status"] == "done"
    ev = events(out)
    resumed_at = max(i for i, e in enumerate(ev) if e["kind"] == "phase" and e["data"]["phase"] == "data")
    later = ev[resumed_at:]
    assert [e["data"]["round"] for e in later if e["kind"] == "round"] == [2, 3]  # round 1 not run again
    assert any(e["kind"] == "resumed" and e["data"]["round"] == 1 for e in later)
    assert [r["round"] for r in done["finetune_rounds"]] == [1, 2, 3]
    assert done["accuracy_after"] == whole["accuracy_after"]
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_the_cli_runs_the_iterative_schedule_and_refuses_a_bad_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    cli = [sys.executable, "-m", "secateurs", "search"]
    job = ["--model", "convnet", "--data", "digits", "--target", "flops=0.5", "--strategy", "uniform"]
    run = ["--train-epochs", "1", "--finetune-epochs", "0.5", "--no-onnx", "--json", "--out", str(tmp_path)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [*cli, *job, *run, "--finetune-prune-schedule", "iterative", "--finetune-rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["finetune_schedule"] == "iterative"
    assert [r["round"] for r in summary["finetune_rounds"]] == [1, 2]
    bad = subprocess.run(
        [*cli, *job, *run, "--finetune-prune-schedule", "gradual"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        check=False,
    )
    assert bad.returncode == 2
    assert "gradual" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_rest_takes_the_iterative_schedule_and_refuses_bad_values(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        body = {k: v for k, v in JOB.items() if k in ("model", "data", "target", "strategy")}
        ok = client.post(
            "/v1/jobs", json={**body, "finetune": {"prune_schedule": "iterative", "rounds": 4}}, headers=auth
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["finetune"]["prune_schedule"] == "iterative"
        assert app.state.store.get_job(ok.json()["id"]).config["finetune"]["rounds"] == 4
        for finetune, field in (
            ({"prune_schedule": "gradual"}, "finetune.prune_schedule"),
            ({"prune_schedule": "iterative", "rounds": 0}, "finetune.rounds"),
        ):
            r = client.post("/v1/jobs", json={**body, "finetune": finetune}, headers=auth)
            assert r.status_code == 422, r.text
            assert field in r.json()["detail"]
