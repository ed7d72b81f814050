"""FLOPs ratio vs measured CPU latency ratio of every zoo model cut to 50% channels.

Run by hand:  python -m bench.latency [--batch-sizes 1 8 32] [--threads 1] [--rate 0.5]
              [--runtimes eager torchscript onnxruntime inductor] [--round-to 1 8 16] [--clock cpu]

Each model is built for 3x32x32 inputs and 10 classes, cut uniformly (L1 criterion, every
group at `rate`), and both networks are timed in each deployment runtime (`pruning.runtime`: warm-up,
median of repeats). Dense and pruned timings are interleaved over several rounds and the
fastest round's median is kept: on a shared machine, load from other processes only ever adds
time, and interleaving exposes both networks to it alike; `--clock cpu` times the process's CPU
time instead, which that load does not stretch at all. Prints a Markdown table; the last
column is the latency reduction divided by the FLOPs reduction.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from bench.common import this_call, write_results
from pruning import build_model, list_models, prune
from pruning.measure import count_flops, count_params
from pruning.runtime import RUNTIMES, Runtime, prepare, time_forward

SHAPE = (3, 32, 32)
# wall: perf_counter; cpu: this process's CPU time (process_time), which other processes' load
# does not stretch: on a shared machine the honest clock for a one-thread run.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def bench_model(
    name: str,
    rate: float,
    batch_size: int,
    rounds: int,
    repeats: int,
    runtime: Runtime = "eager",
    round_to: int = 1,
    clock: str = "wall",
) -> dict:
    """FLOPs, params and interleaved latency medians of one model, dense and cut (every group
    by `rate`, kept channels rounded to a multiple of `round_to`), in one deployment runtime."""
    torch.manual_seed(0)
    dense = build_model(name, num_classes=10, in_channels=3, input_size=32).eval()
    pruned = prune(dense, rate, "l1", input_shape=SHAPE, round_to=round_to).eval()
    runs = {key: prepare(m, SHAPE, runtime, batch_size) for key, m in (("dense", dense), ("pruned", pruned))}
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for _ in range(rounds):
        for key in ("dense", "pruned"):
            times[key].append(time_forward(runs[key], warmup=3, repeats=repeats, clock=CLOCKS[clock]))
    f0, f1 = count_flops(dense, SHAPE), count_flops(pruned, SHAPE)
    l0, l1 = min(times["dense"]), min(times["pruned"])
    flops_cut, latency_cut = 1 - f1 / f0, 1 - l1 / l0
    return {
        "model": name,
        "runtime": runtime,
        "round_to": round_to,
        "rate": rate,
        "clock": clock,
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the rows as JSON (--out)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["eager"], help="deployment runtimes")
    ap.add_argument("--round-to", type=int, nargs="+", default=[1], help="kept channels rounded to a multiple")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall", help="wall time or the process's CPU time")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = [
        bench_model(m, args.rate, b, args.rounds, args.repeats, rt, r, args.clock)
        for rt in args.runtimes
        for m in args.models
        for r in args.round_to
        for b in args.batch_sizes
    ]
    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), input 3x32x32, {args.rate:.0%} of channels cut per group (L1), "
        f"best of {args.rounds} interleaved rounds of the median of {args.repeats} runs ({args.clock} time); "
        f"load average {load:.1f} at the start\n"
    )
    print(
        "| model | runtime | round_to | batch | MACs dense | MACs pruned | FLOPs ratio | latency dense (ms) "
        "| latency pruned (ms) | latency ratio | latency cut / FLOPs cut |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['runtime']} | {r['round_to']} | {r['batch_size']} "
            f"| {r['flops_before'] / 1e6:.1f}M | {r['flops_after'] / 1e6:.1f}M "
            f"| {r['flops_ratio']:.3f} | {r['latency_ms_before']:.2f} | {r['latency_ms_after']:.2f} "
            f"| {r['latency_ratio']:.3f} | {r['efficiency']:.2f} |"
        )
    if args.out:
        record = {"config": vars(args), "load_average": load, "rows": rows}
        write_results(args.out, record, [this_call("bench.latency", argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
