"""Networks from outside the zoo on this machine, no server: `secateurs prune|search --model
FILE.pt2` and `--model package.module:factory`, and `workers.pipeline.prune_module` running a
whole job on an `nn.Module` in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning.export import export_program
from pruning.measure import count_flops
from workers.pipeline import prune_module

pytestmark = pytest.mark.usefixtures("one_thread")
SECATEURS = str(Path(sys.executable).parent / "secateurs")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
SHAPE = (1, 16, 16)


def _net(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    ).eval()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SECATEURS, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )


def test_prune_module_runs_the_whole_job_on_a_module_in_memory(tmp_path) -> None:
    net = _net()
    config = {
        "data": {"name": "digits"},
        "target": {"flops": 0.6},
        "strategy": {"name": "uniform"},
        "finetune": {"max_steps": 10},
    }
    summary = prune_module(net, torch.randn(2, *SHAPE), config, tmp_path)
    assert summary["status"] == "done"
    assert summary["flops_after"] <= 0.6 * summary["flops_before"]
    assert summary["flops_before"] == count_flops(net, SHAPE)
    assert summary["layer_channels"]["0"] == [16, 16]  # the stem stays whole by default
    assert summary["layer_channels"]["3"][1] == 32
    assert summary["layer_channels"]["3"][0] < 32
    program = torch.export.load(tmp_path / "model.pt2").module()
    assert program(torch.randn(3, *SHAPE)).shape == (3, 10)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == "input.pt2"
    with pytest.raises(ValueError, match="leave model out"):
        prune_module(net, torch.randn(2, *SHAPE), {**config, "model": {"zoo": "convnet"}}, tmp_path / "again")


def test_cli_prune_takes_a_program_and_refuses_data_that_does_not_fit(tmp_path) -> None:
    path = export_program(_net(), tmp_path / "mine.pt2", SHAPE)
    r = _cli("prune", "--model", str(path), "--data", "digits", "--rate", "0.5", "--out", "out", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["flops_after"] < res["flops_before"]
    assert (tmp_path / "out" / "model.pt2").is_file()
    assert not (tmp_path / "out" / "arch.json").exists()
    seven = export_program(_net(7), tmp_path / "seven.pt2", SHAPE)
    r = _cli("prune", "--model", str(seven), "--data", "digits", "--rate", "0.5", "--out", "o2", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "secateurs: error: data set digits gives 1x16x16 images in 10 classes, "
        "but the model takes 1x16x16 inputs and gives 7 outputs"
    )


def test_cli_search_builds_a_factory_trains_it_and_returns_a_program(tmp_path) -> None:
    r = _cli(
        "search",
        "--model",
        "pruning.models.convnet:convnet",
        "--data",
        "digits",
        "--target",
        "flops=0.6",
        "--strategy",
        "uniform",
        "--train-epochs",
        "0.2",
        "--finetune-max-steps",
        "5",
        "--out",
        "out",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"] == "pruning.models.convnet:convnet"
    assert summary["flops_after"] <= 0.6 * summary["flops_before"]
    out = tmp_path / "out"
    assert (out / "base_model.safetensors").is_file()  # trained first: no weights were given
    net = torch.export.load(out / "model.pt2").module()
    assert net(torch.randn(2, *SHAPE)).shape == (2, 10)
