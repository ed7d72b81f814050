"""bench/ is a package: every benchmark answers `--help` when run as `python -m bench.<name>`
runs it, in a fresh process (imports resolve without path hacks), and the shared set-up behaves
as documented: Spearman's rho is None where it is undefined, and a results file keeps every call
that wrote it."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import previous_calls, spearman, this_call, write_results

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if re.search(r"^def main\(", p.read_text(), re.M))


def test_every_benchmark_is_found() -> None:
    assert {"hard", "strategies", "allocation", "finetune_budget", "throughput", "load", "int8_latency"} <= set(
        BENCHMARKS
    )


# Runs each benchmark as `python -m` does (runpy, `__main__`), one after another in one fresh
# process: the imports are paid once, not once per benchmark (a second each way).
HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv = [f"bench.{name}", "--help"]
    stdout, stderr, code = io.StringIO(), io.StringIO(), None
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # a benchmark that fails to import
            code = 1
            print(repr(exc), file=stderr)
    out[name] = [code, stdout.getvalue()[:200], stderr.getvalue()[-2000:]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, list]:
    """Each benchmark's `--help`: exit status, the start of stdout, the end of stderr."""
    run = subprocess.run(
        [sys.executable, "-c", HELP_ALL, *BENCHMARKS],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", BENCHMARKS)
def test_help_runs_as_a_module(name: str, helps: dict[str, list]) -> None:
    code, stdout, stderr = helps[name]
    assert code in (0, None), stderr
    assert stdout.startswith("usage:")


def test_no_benchmark_edits_sys_path() -> None:
    edits = [p.name for p in (ROOT / "bench").glob("*.py") if "sys.path.insert" in p.read_text()]
    assert edits == []


def test_spearman_is_none_where_undefined_and_scipy_elsewhere() -> None:
    assert spearman([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]) is None  # a constant side: no ranking
    assert spearman([0.7, 0.7], [1.0, 2.0]) is None
    assert spearman([1.0], [2.0]) is None
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # ties take average ranks: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    rho = spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert rho is not None
    assert rho == pytest.approx(0.9486832980505138)
    with pytest.raises(ValueError, match="NaN"):
        spearman([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="lengths"):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])


def test_a_results_file_keeps_every_call(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert previous_calls(path) == []
    first = this_call("bench.hard", ["--seeds", "0"])
    write_results(path, {"rows": [1]}, [first])
    second = this_call("bench.hard", ["--seeds", "1", "--resume"])
    write_results(path, {"rows": [1, 2]}, [*previous_calls(path), second])
    saved = json.loads(path.read_text())
    assert saved["rows"] == [1, 2]
    assert [c["argv"] for c in saved["calls"]] == [["--seeds", "0"], ["--seeds", "1", "--resume"]]
    assert saved["calls"][1]["command"] == "python -m bench.hard --seeds 1 --resume"
    assert all(re.fullmatch(r"[0-9a-f]{40}", c["commit"]) for c in saved["calls"])
    assert all(c["time"].endswith("+00:00") for c in saved["calls"])


def test_hard_quantize_rows_are_valid_int8_jobs() -> None:
    """`bench.hard --quantize` asks every Secateurs row for INT8 as a user would (and the ONNX
    export INT8 is made from); without the flag the rows stay FP32 and skip the export."""
    from bench.hard import job_config
    from workers.config import JobConfig

    base = {"data": "digits", "input_size": 16, "subset": 0, "finetune_epochs": 1, "finetune_lr": 0.05}
    base |= {"val_batches": 1, "runtime": "onnxruntime-int8"}
    for quantize in (True, False):
        args = argparse.Namespace(**base, quantize=quantize)
        config = job_config(args, "convnet", Path("w.safetensors"), "latency=0.5", 0, "eagleeye")
        job = JobConfig.model_validate(config)
        assert job.onnx is quantize
        assert job.quantize.mode == ("int8" if quantize else None)
        assert job.runtime == "onnxruntime-int8"


def test_equal_latency_reads_the_latency_cuts_line_at_the_flops_cuts_latency() -> None:
    """The INT8 comparison at equal latency: inside the latency cuts' range it interpolates
    between the two that bracket the FLOPs cut; outside it extrapolates from the nearest two and
    says so; another seed's or model's cuts are never used."""
    from bench.int8_accuracy import equal_latency

    def row(model: str, target: str, seed: int, ratio: float, acc: float) -> dict:
        return {"model": model, "target": target, "seed": seed, "int8_latency_ratio": ratio, "accuracy_int8": acc}

    rows = [
        row("a", "latency=0.5", 0, 0.5, 0.80),
        row("a", "latency=0.65", 0, 0.6, 0.84),
        row("a", "latency=0.8", 0, 0.8, 0.90),
        row("a", "flops=0.2", 0, 0.7, 0.85),  # between 0.6 and 0.8: 0.87 there
        row("a", "latency=0.5", 1, 0.5, 0.50),  # seed 1's cuts
        row("a", "latency=0.65", 1, 0.6, 0.60),
        row("a", "flops=0.2", 1, 0.4, 0.45),  # below both: 0.50 - 0.10 = 0.40 there
        row("b", "flops=0.2", 0, 0.7, 0.85),  # no latency cuts of its own
        row("a", "dense", 0, 1.0, 0.95),
    ]
    pairs = {(p["model"], p["seed"]): p for p in equal_latency(rows)}
    assert set(pairs) == {("a", 0), ("a", 1)}
    assert pairs["a", 0]["read"] == "interpolated"
    assert pairs["a", 0]["between_ratios"] == [0.6, 0.8]
    assert abs(pairs["a", 0]["gain_points"] - 2.0) < 1e-9
    assert pairs["a", 1]["read"] == "extrapolated"
    assert abs(pairs["a", 1]["gain_points"] - (-5.0)) < 1e-9
