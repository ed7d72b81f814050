"""`secateurs search` end to end in a subprocess, and the pipeline's stop-and-resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import torch

from pruning.export import load_model
from workers.pipeline import run_pipeline
from workers.sink import FileSink, read_resume

CLI = [sys.executable, "-m", "secateurs"]
KEYS = [
    "strategy",
    "policy",
    "accuracy_before",
    "accuracy_after",
    "flops_before",
    "flops_after",
    "params_before",
    "params_after",
    "latency_ms_before",
    "latency_ms_after",
    "candidates",
    "search_seconds",
]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1], check=False
    )


def test_search_json_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "job"
    proc = _run(
        "search",
        "--model",
        "convnet",
        "--data",
        "digits",
        "--target",
        "flops=0.5",
        "--strategy",
        "eagleeye",
        "--option",
        "n_samples=3",
        "--option",
        "top_k=1",
        "--option",
        "finetune_steps=2",
        "--train-epochs",
        "1",
        "--finetune-max-steps",
        "20",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert key in summary
    assert summary["strategy"] == "eagleeye"
    assert summary["candidates"] == 4
    assert summary["flops_after"] <= 0.5 * summary["flops_before"]
    assert summary["params_after"] < summary["params_before"]
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    for name in [
        "model.safetensors",
        "arch.json",
        "model.onnx",
        "report.json",
        "candidates.csv",
        "candidates.json",
        "pareto.png",
        "channels.png",
        "checkpoint.pt",
        "candidates.jsonl",
    ]:
        assert (out / name).stat().st_size > 0, name
    assert len((out / "candidates.csv").read_text().strip().splitlines()) == 1 + summary["candidates"]
    model = load_model(out)
    x = torch.randn(3, 1, 16, 16)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch.testing.assert_close(
            torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]), model(x), atol=1e-4, rtol=1e-4
        )
    assert json.loads((out / "report.json").read_text())["kept_channels"] == summary["kept_channels"]


def test_search_errors_are_one_line_and_help_lists_strategies(tmp_path: Path) -> None:
    proc = _run(
        "search",
        "--model",
        "convnet",
        "--data",
        "digits",
        "--strategy",
        "uniform",
        "--target",
        "flops=0.001",
        "--out",
        str(tmp_path / "x"),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("secateurs: error: target flops<=0.1% is infeasible")
    assert not (tmp_path / "x" / "base_model.safetensors").exists()  # failed before any training
    proc = _run("search", "--help")
    assert proc.returncode == 0
    for name in [
        "uniform",
        "sensitivity",
        "global",
        "eagleeye",
        "netadapt",
        "optuna",
        "amc",
        "metapruning",
        "autoslim",
    ]:
        assert name in proc.stdout


class Recorder(FileSink):
    """A local sink that also keeps candidates in memory and can stop after n of them."""

    def __init__(self, out: Path, stop_after: int | None = None) -> None:
        super().__init__(out)
        self.seen: list = []
        self.stop_after = stop_after

    def candidate(self, result) -> None:
        super().candidate(result)
        self.seen.append(result)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.seen) >= self.stop_after


def test_pipeline_stop_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    config = {
        "model": {"zoo": "convnet"},
        "data": {"name": "digits"},
        "target": {"flops": 0.4},
        "strategy": {"name": "optuna", "options": {"n_trials": 4, "n_startup_trials": 2}},
        "train": {"epochs": 1},
        "finetune": {"max_steps": 0},
        "search": {"val_batches": 1},
        "onnx": False,
    }
    whole = run_pipeline(config, tmp_path / "whole")
    first = Recorder(tmp_path / "part", stop_after=2)
    stopped = run_pipeline(config, tmp_path / "part", first)
    assert stopped["status"] == "stopped"
    assert stopped["candidates"] == 2
    again = Recorder(tmp_path / "part")
    resume = read_resume(tmp_path / "part")
    assert resume is not None
    assert len(resume.results) == 2  # the record: candidates.jsonl
    resumed = run_pipeline(config, tmp_path / "part", again, resume=resume)
    assert len(again.seen) == 2  # only the candidates not evaluated before the stop
    assert resumed["candidates"] == whole["candidates"] == 4
    assert resumed["policy"] == whole["policy"]
    assert resumed["accuracy_after"] == whole["accuracy_after"]
