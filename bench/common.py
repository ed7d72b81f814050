"""The set-up every benchmark shares: the trained base model (trained once, seeded, cached by its
`pruning.train.training_key`), the search set-up (evaluation context, the strategy's default
evaluator), Spearman's rank correlation, the Markdown table writer, and the provenance a results
file carries (every call that wrote into it, the base weights' SHA-256)."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from pruning.data import DataSplits
from pruning.export import load_weights, save_weights
from pruning.models import build_model
from pruning.train import TrainConfig, cached_weights, seed_everything, train, training_key
from search.evaluators import EvalContext, Evaluator, make_evaluator
from search.registry import strategy_class
from search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BASES = RESULTS / "bases"
"""Base models committed with the tables made from them (bench/hard.py's)."""


def model_args(data: DataSplits) -> dict[str, int]:
    """The zoo arguments a data set decides (classes, input channels, input size)."""
    return {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}


def input_shape(data: DataSplits) -> tuple[int, int, int]:
    """(C, H, W) of a data set's images."""
    return (data.in_channels, data.input_size, data.input_size)


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes (how a results file names the weights it used)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Base:
    """A trained base model, the file its weights live in, their SHA-256 and, when trained by this
    call, the seconds it took (None when loaded)."""

    model: nn.Module
    path: Path
    sha256: str
    trained_seconds: float | None = None


def base_model(
    zoo: str,
    data: DataSplits,
    config: TrainConfig,
    data_facts: Mapping[str, object],
    cache_dir: str | Path,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
) -> Base:
    """The benchmark's base model, trained with `config` on `data.train`: loaded from `weights`
    when given (and present), else from `cache_dir` under its `training_key` (the architecture,
    `data_facts`, the training settings, torch's version and thread count), else trained, seeded,
    and saved there. The initial weights come from `config.seed` (seeded before the build), so
    a cache miss trains the same weights again on the same kind of machine."""
    seed_everything(config.seed)  # before the build: the initial weights come from the seeded generator
    args = model_args(data)
    model = build_model(zoo, **args).to(device)
    path = (
        Path(weights)
        if weights is not None
        else cached_weights(cache_dir, zoo, training_key(zoo, args, data_facts, config))
    )
    seconds = None
    if path.exists():
        load_weights(model, path)
    else:
        t0 = time.perf_counter()
        train(model, data.train, config, device=device)
        seconds = time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, path)
        print(f"trained {zoo} in {seconds:.0f}s: {path}", file=sys.stderr)
    return Base(model.to(device).eval(), path, sha256_file(path), seconds)


def eval_context(
    model: nn.Module,
    data: DataSplits,
    space: SearchSpace,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]],
    seed: int,
    device: str | torch.device = "cpu",
    val_batches: int | None = None,
) -> EvalContext:
    """The evaluators' context of a benchmark search: the base model and data, the space's input
    shape, the calibration batches (adaptive BN), the seed and the validation cap."""
    return EvalContext(
        model,
        data,
        tuple(space.input_shape),
        calibration=calibration,
        space=space,
        seed=seed,
        device=device,
        val_batches=val_batches,
    )


def default_evaluator(
    strategy: str, context: EvalContext, options: Mapping[str, Mapping[str, Any]] | None = None
) -> Evaluator:
    """The evaluator a job gives `strategy` (its `default_evaluator`, else adaptive BN), with that
    evaluator's entry of `options` (by evaluator name) as its options."""
    name = strategy_class(strategy).default_evaluator or "adaptive-bn"
    return make_evaluator(name, context, **dict((options or {}).get(name, {})))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long samples (average ranks for ties). None
    when it is undefined: fewer than two pairs, or either side constant (no ranking to compare,
    which is not the same as "no correlation", so it is not reported as 0). A NaN or infinite
    value is a broken measurement and raises ValueError rather than turning into a number."""
    from scipy.stats import spearmanr

    if len(a) != len(b):
        raise ValueError(f"spearman: samples of different lengths ({len(a)}, {len(b)})")
    if not all(math.isfinite(x) for x in (*a, *b)):
        raise ValueError("spearman: a sample holds NaN or infinity")
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str] | None = None) -> str:
    """A Markdown table (no trailing newline): `align` gives each column's separator cell
    ("---" by default, "---:" to right-align)."""
    seps = list(align) if align is not None else ["---"] * len(header)
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(seps)}|"]
    lines += [f"| {' | '.join(str(c) for c in row)} |" for row in rows]
    return "\n".join(lines)


def git_commit() -> dict[str, object]:
    """The checked-out commit of the repository and whether the work tree has changes."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def machine() -> dict[str, object]:
    """What decides the arithmetic besides the code: torch's version and CPU kernel level, the
    CPU (model and its vector extensions: oneDNN and MKL pick kernels by them, and their sums
    round differently) and the CPU count."""
    cpu: dict[str, str] = {}
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "model", "flags") and key.strip() not in cpu:
            cpu[key.strip()] = value.strip()
    flags = sorted(f for f in cpu.get("flags", "").split() if f.startswith(("avx", "amx", "fma")))
    return {
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu.get("model name", platform.processor()),
        "cpu_model": cpu.get("model"),
        "cpu_vector_flags": flags,
        "cpus": os.cpu_count(),
    }


def this_call(module: str, argv: Sequence[str] | None) -> dict[str, object]:
    """One entry of a results file's `calls`: the command (as `python -m` runs it), its
    arguments, the UTC time it started, the git commit it ran from and the machine."""
    args = list(sys.argv[1:] if argv is None else argv)
    return {
        "command": shlex.join(["python", "-m", module, *args]),
        "argv": args,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **git_commit(),
        "machine": machine(),
    }


def previous_calls(path: Path) -> list[dict[str, object]]:
    """The calls an existing results file records (an older file without them: none)."""
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return list(saved.get("calls", [])) if isinstance(saved, dict) else []


def add_job_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every benchmark of service jobs shares (candidates, fine-tune budget, threads,
    a quick check, where results go, and the run-control `RUN_FLAGS`)."""
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small settings to check the benchmark runs")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--resume", action="store_true", help="keep the rows already in the results file; run the rest")
    p.add_argument("--table", action="store_true", help="print the tables of the results file in --out; run nothing")


RUN_FLAGS = ("resume", "table")
"""Flags that say how to run a benchmark, not what it measures: left out of its settings."""


def run_settings(args: argparse.Namespace) -> dict[str, object]:
    """A benchmark's settings as its results file records them: every argument but `RUN_FLAGS`."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in RUN_FLAGS}


def resumed(
    path: Path, settings: Mapping[str, object], splits: Mapping[str, int], call: dict[str, object], resume: bool
) -> tuple[list[dict], list[dict[str, object]]]:
    """The rows an interrupted run of the same settings and splits left in `path` (with
    `resume`; none otherwise) and the calls that wrote them followed by `call`; other settings
    stop the run with a message rather than mix two runs in one file."""
    if not (resume and path.exists()):
        return [], [call]
    saved = json.loads(path.read_text())
    if saved.get("settings") != dict(settings) or saved.get("splits") != dict(splits):
        raise SystemExit(f"{path} was written with other settings; --resume continues the same run")
    return list(saved["rows"]), [*previous_calls(path), call]


def write_results(path: str | Path, record: Mapping[str, object], calls: Sequence[Mapping[str, object]]) -> None:
    """Write a results file: `record` with `calls`, every call that wrote rows into it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**record, "calls": list(calls)}, indent=1, default=str))


def peer_module(name: str, install: str) -> ModuleType:
    """Import a peer library the comparison rows need, or stop with a message naming it and how
    to install it (`install`), instead of a traceback."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise SystemExit(f"the peer library {name!r} is not importable ({exc}); {install}") from exc
