"""The real `secateurs train / prune / unstructured` commands, run as subprocesses on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruning.export import load_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
KEYS = {
    "accuracy_before",
    "accuracy_after",
    "flops_before",
    "flops_after",
    "params_before",
    "params_after",
    "latency_ms_before",
    "latency_ms_after",
}


SECATEURS = [sys.executable, "-m", "secateurs"]  # what the console script runs (`secateurs:main`)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SECATEURS, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    r = cli(
        "train",
        "--model",
        "convnet",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--out",
        str(d / "ckpt.safetensors"),
        "--json",
        cwd=d,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["accuracy"] > 0.5
    return d / "ckpt.safetensors"


def test_train_writes_weights_and_sidecar(ckpt: Path) -> None:
    side = json.loads(ckpt.with_suffix(".json").read_text())
    assert side["zoo"] == "convnet"
    assert side["args"] == {"num_classes": 10, "in_channels": 1, "input_size": 16, "width": 1.0}


def test_prune_json_reports_and_exports(ckpt: Path) -> None:
    out = ckpt.parent / "pruned"
    r = cli(
        "prune",
        "--model",
        "convnet",
        "--weights",
        str(ckpt),
        "--data",
        "digits",
        "--criterion",
        "fpgm",
        "--rate",
        "0.5",
        "--finetune-epochs",
        "1",
        "--out",
        str(out),
        "--json",
        cwd=ckpt.parent,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) >= KEYS
    assert res["flops_after"] < res["flops_before"]
    assert res["params_after"] < res["params_before"]
    assert res["latency_ms_after"] > 0
    assert res["accuracy_after"] > 0.5
    assert "warning" not in r.stderr
    for name in ("model.safetensors", "arch.json", "model.onnx", "model.torchscript.pt", "report.json"):
        assert (out / name).exists()
    assert sum(p.numel() for p in load_model(out).parameters()) == res["params_after"]


def test_prune_global_data_dependent_without_weights_warns(tmp_path: Path) -> None:
    r = cli(
        "prune",
        "--model",
        "convnet",
        "--data",
        "digits",
        "--criterion",
        "apoz",
        "--rate",
        "0.3",
        "--global",
        "--out",
        str(tmp_path / "p"),
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "random initialisation" in r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["global"] is True
    assert res["flops_after"] < res["flops_before"]


def test_unstructured_magnitude_reports_real_sparsity(ckpt: Path) -> None:
    out = ckpt.parent / "masked"
    r = cli(
        "unstructured",
        "--model",
        "convnet",
        "--weights",
        str(ckpt),
        "--data",
        "digits",
        "--method",
        "magnitude",
        "--sparsity",
        "0.6",
        "--scope",
        "global",
        "--out",
        str(out),
        "--json",
        cwd=ckpt.parent,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["sparsity"] == pytest.approx(0.6, abs=1e-3)
    model = load_model(out)
    zeros = sum(
        int((m.weight == 0).sum())
        for m in model.modules()
        if hasattr(m, "weight") and m.weight is not None and m.weight.dim() > 1
    )
    assert res["params"] - res["params_nonzero"] == zeros


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nonet", "--data", "digits", "--rate", "0.5"], "unknown model"),
        (["--model", "convnet", "--data", "digits", "--rate", "0.5", "--criterion", "magic"], "unknown criterion"),
        (["--model", "convnet", "--data", "mnist9", "--rate", "0.5"], "unknown data set"),
        (["--model", "convnet", "--data", "digits", "--rate", "1.5"], "outside (0, 1)"),
        (
            ["--model", "convnet", "--data", "digits", "--rate", "0.5", "--weights", "missing.safetensors"],
            "does not exist",
        ),
        (["--model", "resnet20", "--data", "digits", "--rate", "0.5", "--weights", "CKPT"], "holds a 'convnet' model"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args: list[str], message: str, ckpt: Path, tmp_path: Path) -> None:
    args = [str(ckpt) if a == "CKPT" else a for a in args]
    r = cli("prune", *args, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1, r.stderr
    assert message in lines[0], r.stderr
