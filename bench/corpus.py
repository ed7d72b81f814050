"""The corpus (tests/corpus) cut to half its FLOPs: groups, groups pinned, FLOPs, params and CPU latency.

Run by hand:  python -m bench.corpus [--names resnext convnext] [--threads 1]
              [--rounds 5 --repeats 20] [--out bench/results/corpus.json]

Each network (3x32x32 inputs, 10 outputs, seeded weights) gets a search space for half its
FLOPs (0.7 for the two whose pinned groups hold too many: `corpus.LIMITED_TARGET`), and the
`uniform` and `global` strategies each choose a policy in process (`search.runner`, scored by a
forward check, as tests/test_corpus.py does). Latency: eager PyTorch on the CPU, 1 thread,
batch 1, dense and cut networks timed in interleaved rounds, the fastest round's median kept;
`--clock cpu` (the default) times the forward in this thread's CPU time, which a loaded, shared
machine does not inflate by descheduling us (`--clock wall` for wall time; both are in the raw
rows). Prints one Markdown row per network and writes every row as JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from bench.common import RESULTS, this_call, write_results
from pruning.measure import count_flops, count_params
from pruning.runtime import prepare, time_forward
from search.space import SearchSpace
from tests.corpus import CORPUS, INPUT_SHAPE, build, search_cut, target  # the corpus lives with the tests

STRATEGIES = ("uniform", "global")


def cpu_time_forward(run: Callable[[], object], warmup: int = 3, repeats: int = 20) -> float:
    """Median CPU time of this thread over `run()` in milliseconds after `warmup` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        run()
        times.append((time.thread_time_ns() - t0) / 1e6)
    return float(statistics.median(times))


def latency_ms(models: dict[str, torch.nn.Module], rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per clock (cpu, wall), the fastest-round median forward time (ms, batch 1, eager) of each
    model, rounds interleaved."""
    runs = {k: prepare(m, INPUT_SHAPE, "eager", 1) for k, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {"cpu": {k: [] for k in models}, "wall": {k: [] for k in models}}
    for _ in range(rounds):
        for k, run in runs.items():
            times["cpu"][k].append(cpu_time_forward(run, repeats=repeats))
            times["wall"][k].append(time_forward(run, warmup=3, repeats=repeats))
    return {clock: {k: min(v) for k, v in per.items()} for clock, per in times.items()}


def bench_network(name: str, rounds: int, repeats: int, clock: str) -> dict[str, Any]:
    """One network's row: its groups and pins, and per strategy the cut's ratios."""
    t0 = time.perf_counter()
    model = build(name)
    space = SearchSpace(model, INPUT_SHAPE, f"flops={target(name)}")
    cuts = {s: search_cut(model, space, s) for s in STRATEGIES}
    lat = latency_ms({"dense": model, **{s: c for s, (_, c) in cuts.items()}}, rounds, repeats)
    f0, p0 = count_flops(model, INPUT_SHAPE), count_params(model)
    row: dict[str, Any] = {
        "name": name,
        "family": CORPUS[name].family,
        "target": target(name),
        "limit": CORPUS[name].limit,
        "groups": len(space.groups),
        "pinned": len(space.engine_pins),
        "pinned_groups": space.engine_pins,
        "flops": f0,
        "params": p0,
        "clock": clock,
        "latency_ms": lat[clock]["dense"],
        "latency_ms_cpu": lat["cpu"]["dense"],
        "latency_ms_wall": lat["wall"]["dense"],
    }
    for s, (best, cut) in cuts.items():
        row[s] = {
            "flops_ratio": count_flops(cut, INPUT_SHAPE) / f0,
            "params_ratio": count_params(cut) / p0,
            "latency_ratio": lat[clock][s] / lat[clock]["dense"],
            "latency_ms": lat[clock][s],
            "latency_ratio_cpu": lat["cpu"][s] / lat["cpu"]["dense"],
            "latency_ratio_wall": lat["wall"][s] / lat["wall"]["dense"],
            "kept_channels": space.kept(best.policy),
        }
    row["seconds"] = time.perf_counter() - t0
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the rows as JSON (--out)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=list(CORPUS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="the table's latency clock")
    ap.add_argument("--out", default=str(RESULTS / "corpus.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    rows = [bench_network(n, args.rounds, args.repeats, args.clock) for n in args.names]
    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"input 3x32x32, batch 1, eager, {args.clock} time; best of {args.rounds} interleaved rounds of the "
        f"median of {args.repeats} runs; load average {load:.1f} at the start\n"
    )
    print(
        "| family | groups | pinned | target | FLOPs ratio (uniform / global) | params ratio (uniform / global) "
        "| CPU latency ratio (uniform / global) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        u, g = r["uniform"], r["global"]
        print(
            f"| {r['family']} | {r['groups']} | {r['pinned']} | {r['target']:.2f} "
            f"| {u['flops_ratio']:.3f} / {g['flops_ratio']:.3f} | {u['params_ratio']:.3f} / {g['params_ratio']:.3f} "
            f"| {u['latency_ratio']:.3f} / {g['latency_ratio']:.3f} |"
        )
    cut_all = sum(r["pinned"] == 0 for r in rows)
    print(f"\n{cut_all} of {len(rows)} networks cut with no group pinned; {len(rows)} of {len(rows)} cut and checked")
    if args.out:
        record = {"config": vars(args), "load_average": load, "rows": rows}
        write_results(args.out, record, [this_call("bench.corpus", argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
