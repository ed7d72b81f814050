"""Does a kept width that is a multiple of 8 or 16 run faster than its unaligned neighbours?
The question behind `round_to`'s default, asked at equal everything else.

Run by hand:  .venv/bin/python bench/latency_widths.py [--widths 32 34 36 38 40 44 48] [--clock cpu]

resnet56 at 3x32x32 (10 classes) is cut so that every 16-channel group keeps 8 and every
32-channel group keeps 16 (both aligned), while every 64-channel group keeps each width of
`--widths` in turn; all those networks are timed in each runtime, interleaved over rounds (best
round's median kept, as in bench/latency.py). If alignment paid, an aligned width (40, 48) would
be no slower than the unaligned width just below it (38, 44): latency would step, not climb.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from bench.common import this_call, write_results
from pruning import build_model, prune
from pruning.graph import DependencyGraph
from pruning.measure import count_flops
from pruning.runtime import RUNTIMES, prepare, time_forward

SHAPE = (3, 32, 32)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def main(argv: list[str] | None = None) -> int:
    """Time the width sweep and print one Markdown row per runtime, batch size and width."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 34, 36, 38, 40, 44, 48])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["eager", "torchscript", "onnxruntime"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    dense = build_model("resnet56", num_classes=10, in_channels=3, input_size=32).eval()
    groups = DependencyGraph(dense, torch.zeros(1, *SHAPE)).groups
    nets = {}
    for w in args.widths:
        kept = {g.key: {16: 8, 32: 16, 64: w}[g.channels] for g in groups}
        nets[w] = prune(dense, kept, "l1", input_shape=SHAPE).eval()
    rows = []
    for rt in args.runtimes:
        for b in args.batch_sizes:
            runs = {w: prepare(net, SHAPE, rt, b) for w, net in nets.items()}
            times: dict[int, list[float]] = {w: [] for w in nets}
            for _ in range(args.rounds):
                for w, run in runs.items():
                    times[w].append(time_forward(run, warmup=3, repeats=args.repeats, clock=CLOCKS[args.clock]))
            for w, net in nets.items():
                rows.append(
                    {
                        "runtime": rt,
                        "batch_size": b,
                        "width64": w,
                        "aligned8": w % 8 == 0,
                        "flops": count_flops(net, SHAPE),
                        "latency_ms": min(times[w]),
                    }
                )
    print(
        f"resnet56 3x32x32, groups of 16/32/64 channels keep 8/16/W, torch {torch.__version__}, 1 thread, "
        f"best of {args.rounds} interleaved rounds of the median of {args.repeats} runs ({args.clock} time); "
        f"load average {load:.1f} at the start\n"
    )
    print("| runtime | batch | W | multiple of 8 | MACs | latency (ms) | ms per GMAC |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        per_gmac = r["latency_ms"] / (r["flops"] * r["batch_size"] / 1e9)
        print(
            f"| {r['runtime']} | {r['batch_size']} | {r['width64']} | {'yes' if r['aligned8'] else 'no'} "
            f"| {r['flops'] / 1e6:.1f}M | {r['latency_ms']:.2f} | {per_gmac:.1f} |"
        )
    if args.out:
        record = {"config": vars(args), "load_average": load, "rows": rows}
        write_results(args.out, record, [this_call("bench.latency_widths", argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
