"""INT8 accuracy and latency of pruned networks: the dense network and every row of a
`bench.hard --quantize` run, FP32 and INT8, with all their latencies timed again on a quiet machine.

Run by hand, after the jobs (bench/hard.py; latency-targeted rows in `onnxruntime-int8`, one
thread, so the table and the end-to-end timings are the deployment's), e.g. resnet56's:

    python -m bench.hard --models resnet56 --targets flops=0.2 --runtime onnxruntime-int8 --rows eagleeye \
        --peers --seeds 0 1 2 --quantize --threads 1 --results runs/r56-flops.json
    python -m bench.hard --models resnet56 --targets latency=0.5 latency=0.65 --runtime onnxruntime-int8 \
        --rows eagleeye --peers --seeds 0 1 2 --quantize --threads 1 --results runs/r56-latency.json
    python -m bench.int8_accuracy runs/r56-flops.json runs/r56-latency.json --out int8-accuracy.json

The jobs time their own networks beside whatever else runs; here, with nothing else running,
each row's `model.onnx` and `model.int8.onnx` are timed with the dense INT8 network of its seed,
each alone and warm (`pruning.quantize.onnx_latency`: ONNX Runtime, one thread, batch 1, median
of `--repeats`), the three in turn, best of `--rounds`, so every ratio compares networks timed
side by side. The dense INT8 network is made as a job
makes it (`quantize_onnx`, MinMax calibration on the same number of training batches, the row's
seed drawing them) and scored on the same test split. Prints a Markdown table and writes the
rows with the command (`bench.common.write_results`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.common import input_shape, markdown_table, model_args, this_call, write_results
from pruning.data import DataSplits, calibration_batches, iterate_inputs, load_dataset
from pruning.export import export_onnx, load_weights
from pruning.models import build_model
from pruning.quantize import onnx_latency, onnx_score, quantize_onnx
from workers.config import QuantizeSpec
from workers.quantize import CALIBRATION_BATCH_SIZE, FP32_FILE, INT8_FILE


def dense_networks(model: str, weights: str, data: DataSplits, seeds: list[int], work: Path) -> dict[str, Any]:
    """The dense base as ONNX, FP32 and (per seed's calibration batches) INT8, with test accuracy."""
    torch.manual_seed(0)
    net = build_model(model, **model_args(data))
    load_weights(net, weights)
    fp32 = work / f"{model}.onnx"
    export_onnx(net.eval(), fp32, input_shape(data))
    n_batches = QuantizeSpec(mode="int8").calibration_batches
    int8 = {}
    for seed in seeds:
        path = work / f"{model}.seed{seed}.int8.onnx"
        batches = calibration_batches(data.train, n_batches, CALIBRATION_BATCH_SIZE, seed)
        quantize_onnx(fp32, path, list(iterate_inputs(batches)), "minmax")
        int8[seed] = {"path": path, "accuracy_int8": onnx_score(path, data.test)}
    return {"fp32": fp32, "accuracy_fp32": onnx_score(fp32, data.test), "int8": int8}


def timed(paths: list[Path], shape: tuple[int, int, int], rounds: int, repeats: int) -> list[float]:
    """Each network timed alone and warm, as a deployed network runs (median of `repeats` after
    warm-up; one thread, batch 1), the networks in turn `rounds` times; the best round's."""
    best = [float("inf")] * len(paths)
    for _ in range(rounds):
        for i, path in enumerate(paths):
            (ms,) = onnx_latency([path], shape, batch_size=1, repeats=repeats, threads=1)
            best[i] = min(best[i], ms)
    return best


def model_rows(
    model: str, weights: str, jobs: list[dict[str, Any]], data: DataSplits, args: argparse.Namespace, work: Path
) -> list[dict]:
    """The dense rows (one per seed) and the job rows of `model`, each with quiet latencies:
    the dense networks, then each row's FP32 and INT8 networks beside the dense INT8 network of
    its seed (`timed`: each alone and warm; run in turn with others, one call each, networks this
    small ran cache-cold, up to 1.7x slower)."""
    seeds = sorted({r["seed"] for r in jobs})
    dense = dense_networks(model, weights, data, seeds, work)
    shape = input_shape(data)
    dense_ms = timed([dense["fp32"], *(dense["int8"][s]["path"] for s in seeds)], shape, args.rounds, args.repeats)
    rows = [
        {
            "model": model,
            "target": "dense",
            "method": "",
            "seed": s,
            "accuracy_fp32": dense["accuracy_fp32"],
            "accuracy_int8": dense["int8"][s]["accuracy_int8"],
            "flops_fraction": 1.0,
            "latency_ms_fp32": dense_ms[0],
            "latency_ms_int8": ms,
            "latency_ms_dense_int8_beside": ms,
        }
        for s, ms in zip(seeds, dense_ms[1:], strict=True)
    ]
    for r in jobs:
        work_dir = Path(r["int8"]["work"])
        paths = [dense["int8"][r["seed"]]["path"], work_dir / FP32_FILE, work_dir / INT8_FILE]
        beside, fp32_ms, int8_ms = timed(paths, shape, args.rounds, args.repeats)
        rows.append(
            {
                "model": model,
                "target": r["target"],
                "method": r["method"],
                "seed": r["seed"],
                "accuracy_fp32": r["int8"]["accuracy_fp32"],
                "accuracy_int8": r["int8"]["accuracy_int8"],
                "calibration": r["int8"]["calibration"],
                "flops_fraction": r["flops_fraction"],
                "latency_ms_fp32": fp32_ms,
                "latency_ms_int8": int8_ms,
                "latency_ms_dense_int8_beside": beside,
                "latency_ms_int8_in_job": r["int8"]["latency_ms_int8"],
            }
        )
    for row in rows:
        row["int8_latency_ratio"] = row["latency_ms_int8"] / row["latency_ms_dense_int8_beside"]
        row["int8_drop_points"] = 100 * (row["accuracy_fp32"] - row["accuracy_int8"])
    return rows


def _mean_std(xs: list[float], scale: float = 1.0, digits: int = 4) -> str:
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{scale * statistics.fmean(xs):.{digits}f} ± {scale * std:.{digits}f}"


def render(rows: list[dict[str, Any]]) -> str:
    """One line per model, target and method: means ± standard deviations over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["target"], r["method"]), []).append(r)
    header = ["model", "target", "method", "seeds", "FP32 accuracy", "INT8 accuracy", "INT8 - FP32 (points)"]
    header += ["INT8 latency / dense INT8", "INT8 ms", "FP32 ms", "FLOPs kept"]
    lines = []
    for (model, target, method), rs in groups.items():
        lines.append(
            [
                model,
                target,
                method,
                ",".join(str(r["seed"]) for r in rs),
                _mean_std([r["accuracy_fp32"] for r in rs]),
                _mean_std([r["accuracy_int8"] for r in rs]),
                _mean_std([-r["int8_drop_points"] for r in rs], digits=2),
                _mean_std([r["int8_latency_ratio"] for r in rs], digits=3),
                f"{statistics.fmean(r['latency_ms_int8'] for r in rs):.3f}",
                f"{statistics.fmean(r['latency_ms_fp32'] for r in rs):.3f}",
                f"{statistics.fmean(r['flops_fraction'] for r in rs):.3f}",
            ]
        )
    return markdown_table(header, lines)


def equal_latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, each FLOPs-targeted cut's INT8 accuracy against the latency-targeted cuts' INT8
    accuracy at the FLOPs cut's measured INT8 latency ratio, read off the line through the two
    latency-targeted cuts of that seed that bracket it (`interpolated`), or else the two nearest
    (`extrapolated`); `gain_points` > 0 when the latency-targeted search is the more accurate."""
    out = []
    for r in rows:
        if not r["target"].startswith("flops"):
            continue
        cuts = sorted(
            (c["int8_latency_ratio"], c["accuracy_int8"])
            for c in rows
            if c["model"] == r["model"] and c["seed"] == r["seed"] and c["target"].startswith("latency")
        )
        if len(cuts) < 2:
            continue
        x = r["int8_latency_ratio"]
        inside = [i for i in range(len(cuts) - 1) if cuts[i][0] <= x <= cuts[i + 1][0]]
        nearest = sorted(range(len(cuts)), key=lambda i: abs(cuts[i][0] - x))[:2]
        i, j = (inside[0], inside[0] + 1) if inside else sorted(nearest)
        (x0, y0), (x1, y1) = cuts[i], cuts[j]
        at = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else (y0 + y1) / 2
        out.append(
            {
                "model": r["model"],
                "flops_target": r["target"],
                "seed": r["seed"],
                "flops_cut_latency_ratio": x,
                "flops_cut_accuracy_int8": r["accuracy_int8"],
                "latency_cuts_accuracy_int8": at,
                "gain_points": 100 * (at - r["accuracy_int8"]),
                "read": "interpolated" if inside else "extrapolated",
                "between_ratios": [x0, x1],
            }
        )
    return out


def render_equal_latency(pairs: list[dict[str, Any]]) -> str:
    """One line per model and FLOPs target: the gain per seed and how it was read."""
    header = ["model", "FLOPs target", "seed", "FLOPs cut: INT8 latency ratio", "its INT8 accuracy"]
    header += ["latency-targeted cuts there", "gain (points)", "read"]
    lines = [
        [
            p["model"],
            p["flops_target"],
            str(p["seed"]),
            f"{p['flops_cut_latency_ratio']:.3f}",
            f"{p['flops_cut_accuracy_int8']:.4f}",
            f"{p['latency_cuts_accuracy_int8']:.4f}",
            f"{p['gain_points']:+.2f}",
            f"{p['read']} ({p['between_ratios'][0]:.3f}-{p['between_ratios'][1]:.3f})",
        ]
        for p in pairs
    ]
    return markdown_table(header, lines)


def main(argv: list[str] | None = None) -> int:
    """Score and time every network of the runs given, print the table and write the rows."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="results of `bench.hard --quantize` on one data setting; a row of a later file replaces the same "
        "model, target, seed and method of an earlier one",
    )
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the timing (each network once a round)")
    ap.add_argument("--repeats", type=int, default=30, help="runs per network and round")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    call = this_call("bench.int8_accuracy", argv)
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    sources = []
    jobs: dict[str, dict[tuple, dict[str, Any]]] = {}  # per model, by (target, seed, method): later runs win
    bases: dict[str, dict[str, str]] = {}
    setting: dict[str, Any] | None = None
    for path in args.runs:
        run = json.loads(path.read_text())
        cfg = run["config"]
        this = {k: cfg[k] for k in ("data", "input_size", "subset")}
        if setting not in (None, this):
            raise SystemExit(f"{path}: another data setting ({this}) than the runs before it ({setting})")
        setting = this
        for model, base in run["base_files"].items():
            if bases.setdefault(model, base)["sha256"] != base["sha256"]:
                raise SystemExit(f"{path}: another {model} base than the runs before it")
        for r in run["rows"]:
            if "int8" in r:
                jobs.setdefault(r["model"], {})[(r["target"], r["seed"], r["method"])] = r
        sources.append({"file": str(path), "config": cfg, "base_files": run["base_files"], "calls": run["calls"]})
    assert setting is not None
    data = load_dataset(setting["data"], input_size=setting["input_size"], subset=setting["subset"] or None, seed=0)
    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as tmp:
        for model, by_key in jobs.items():
            rows += model_rows(model, bases[model]["path"], list(by_key.values()), data, args, Path(tmp))
    table = render(rows)
    pairs = equal_latency(rows)
    load_end = os.getloadavg()
    loads = f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end"
    print(f"ONNX Runtime, 1 thread, batch 1; {loads}\n")
    print(table)
    equal_table = render_equal_latency(pairs)
    print(f"\nAt equal measured INT8 latency, per seed:\n\n{equal_table}")
    record = {"load_average_start": load_start, "load_average_end": load_end, "sources": sources, "rows": rows}
    record |= {"equal_latency": pairs, "equal_latency_table": equal_table}
    write_results(args.out, {**record, "table": table}, [call])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
