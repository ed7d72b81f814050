"""FLOPs ratio vs measured CPU latency ratio of every zoo model cut to 50% channels.

Run by hand:  .venv/bin/python bench/latency.py [--batch-sizes 1 8 32] [--threads 1] [--rate 0.5]

Each model is built for 3x32x32 inputs and 10 classes, cut uniformly (L1 criterion, every
group at `rate`), and both networks are timed with `pruning.measure.measure_latency` (warm-up,
median of repeats). Dense and pruned timings are interleaved over several rounds and the
fastest round's median is kept: on a shared machine, load from other processes only ever adds
time, and interleaving exposes both networks to it alike. Prints a Markdown table; the last
column is the latency reduction divided by the FLOPs reduction.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning import build_model, list_models, prune
from pruning.export import export_onnx
from pruning.measure import count_flops, count_params, measure_latency

SHAPE = (3, 32, 32)


def onnx_timer(model: torch.nn.Module, threads: int):
    """Export to ONNX (checked against PyTorch) and return a function timing onnxruntime's
    median forward in ms, so the exported model is measured the way it would be served."""
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(model, path, SHAPE, atol=1e-2)  # untrained logits are large: 1e-2 is float32 noise here
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def timed(batch_size: int, warmup: int, repeats: int) -> float:
        x = torch.randn(batch_size, *SHAPE).numpy()
        runs = []
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            sess.run(None, {"input": x})
            if i >= warmup:
                runs.append((time.perf_counter() - t0) * 1000.0)
        return float(statistics.median(runs))

    return timed


def bench_model(
    name: str, rate: float, batch_size: int, rounds: int, repeats: int, runtime: str = "torch", threads: int = 1
) -> dict:
    """FLOPs, params and interleaved latency medians of one model, dense and pruned, in eager
    PyTorch or (runtime="onnx") in onnxruntime."""
    torch.manual_seed(0)
    dense = build_model(name, num_classes=10, in_channels=3, input_size=32).eval()
    pruned = prune(dense, rate, "l1", input_shape=SHAPE).eval()
    if runtime == "onnx":
        timers = {"dense": onnx_timer(dense, threads), "pruned": onnx_timer(pruned, threads)}
    else:
        timers = {
            key: (lambda b, w, r, m=m: measure_latency(m, SHAPE, batch_size=b, warmup=w, repeats=r))
            for key, m in (("dense", dense), ("pruned", pruned))
        }
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for _ in range(rounds):
        for key in ("dense", "pruned"):
            times[key].append(timers[key](batch_size, 3, repeats))
    f0, f1 = count_flops(dense, SHAPE), count_flops(pruned, SHAPE)
    l0, l1 = min(times["dense"]), min(times["pruned"])
    flops_cut, latency_cut = 1 - f1 / f0, 1 - l1 / l0
    return {
        "model": name,
        "runtime": runtime,
        "batch_size": batch_size,
        "flops_before": f0,
        "flops_after": f1,
        "params_before": count_params(dense),
        "params_after": count_params(pruned),
        "latency_ms_before": l0,
        "latency_ms_after": l1,
        "flops_ratio": f1 / f0,
        "latency_ratio": l1 / l0,
        "efficiency": latency_cut / flops_cut,
    }


def main() -> int:
    """Run the benchmark and print the table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch", help="eager PyTorch or onnxruntime")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        bench_model(m, args.rate, b, args.rounds, args.repeats, args.runtime, args.threads)
        for m in args.models
        for b in args.batch_sizes
    ]
    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, runtime {args.runtime}, "
        f"{args.threads} thread(s), input 3x32x32, {args.rate:.0%} of channels cut per group (L1), "
        f"best of {args.rounds} interleaved rounds of the median of {args.repeats} runs\n"
    )
    print(
        "| model | batch | MACs dense | MACs pruned | FLOPs ratio | latency dense (ms) | latency pruned (ms) "
        "| latency ratio | latency cut / FLOPs cut |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch_size']} | {r['flops_before'] / 1e6:.1f}M | {r['flops_after'] / 1e6:.1f}M "
            f"| {r['flops_ratio']:.3f} | {r['latency_ms_before']:.2f} | {r['latency_ms_after']:.2f} "
            f"| {r['latency_ratio']:.3f} | {r['efficiency']:.2f} |"
        )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
