"""INT8 latency targets in ONNX Runtime: dense FP32 and INT8 latency, and latency-targeted cuts
predicted vs measured in the `onnxruntime-int8` runtime.

Run by hand:  python -m bench.int8_latency [--models resnet56 mobilenetv2 resnet18w] [--size 64]
              [--targets 0.8 0.65 0.5] [--grid 6] [--table-repeats 5] [--rounds 3] [--repeats 20]

Each network is built for 3xSIZExSIZE inputs and 10 classes with its initial weights (latency does
not depend on the weights; INT8 activation ranges are calibrated on random inputs, which is right
for timing only). `resnet18w` is a ResNet-18-width network built here (a 3x3 stride-2 stem, four
stages of two basic blocks at 64/128/256/512 channels); the zoo's `resnet18` has torchvision's
7x7 stem and max-pool, and a quarter of those FLOPs at the same input size.
Per network: its INT8 latency table (`search.latency.LatencyTable`, `--grid` widths per
dimension, `--table-repeats` runs per entry, cached as a job's are) and its `round_to` measured in
`onnxruntime-int8` (`search.latency.measure_round_to`); for each target fraction of the dense
INT8 latency, the uniform cut (every searchable group at the same share of its largest rate)
that the table predicts meets it, found by bisection (`search.space.bisect_scalar`) with the
measured `round_to`; then the dense and cut networks are timed interleaved, FP32 and INT8, best
of `--rounds` rounds of the median of `--repeats` runs. Prints a Markdown table and writes the
rows with the command (`bench.common.write_results`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import RESULTS, markdown_table, this_call, write_results
from pruning import build_model
from pruning.measure import count_flops
from pruning.models.resnet import basic_stages
from pruning.runtime import Runtime, prepare, time_interleaved
from search.base import SearchError
from search.latency import LatencyTable
from search.space import SearchSpace, bisect_scalar

INT8: Runtime = "onnxruntime-int8"
FP32: Runtime = "onnxruntime"


class ResNet18Width(nn.Module):
    """A ResNet-18-width network for small images: a 3x3 stride-2 stem at 64 channels, four stages
    of two basic blocks at 64/128/256/512 channels (strides 1, 2, 2, 2), global pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layers = nn.Sequential(*basic_stages([64, 128, 256, 512], 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def network(name: str, size: int) -> nn.Module:
    """The benchmark's network `name` for 3xSIZExSIZE inputs, 10 classes, seeded weights."""
    torch.manual_seed(0)
    if name == "resnet18w":
        return ResNet18Width().eval()
    return build_model(name, num_classes=10, in_channels=3, input_size=size).eval()


def timed(models: list[nn.Module], runtimes: list[Runtime], shape: tuple[int, ...], rounds: int, repeats: int):
    """Best of `rounds` interleaved medians (ms) of each model in its runtime."""
    runs = [prepare(m, shape, rt) for m, rt in zip(models, runtimes, strict=True)]
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        best = [min(b, t) for b, t in zip(best, time_interleaved(runs, warmup=3, repeats=repeats), strict=True)]
    return best


def bench_network(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Dense FP32/INT8 latency, then one latency-targeted cut per target (predicted vs measured)."""
    shape = (3, args.size, args.size)
    dense = network(name, args.size)
    t0 = time.perf_counter()
    table = LatencyTable.for_model(dense, shape, grid=args.grid, repeats=args.table_repeats, runtime=INT8)
    table_s = time.perf_counter() - t0
    fp32_ms, int8_ms = timed([dense, dense], [FP32, INT8], shape, args.rounds, args.repeats)
    flops = count_flops(dense, shape)
    rows = []
    for target in args.targets:
        row: dict[str, Any] = {
            "model": name,
            "size": args.size,
            "target": target,
            "dense_fp32_ms": fp32_ms,
            "dense_int8_ms": int8_ms,
            "table_seconds": table_s,
            "table_device": table.device,
            "table_scale": table.scale,
            "table_calibration": table.calibration,
        }
        try:
            space = SearchSpace(dense, shape, f"latency={target}", runtime=INT8, round_to=None, latency_table=table)
        except SearchError as exc:
            rows.append({**row, "error": str(exc)})
            continue
        hi = {k: space.bounds[k][1] for k in space.keys}
        _, policy = bisect_scalar(space, lambda t, hi=hi: {k: t * v for k, v in hi.items()}, 0.0, 1.0)
        cut = space.cut(policy).eval()
        predicted = space.resource(policy)
        cut_fp32, cut_int8, dense_int8 = timed([cut, cut, dense], [FP32, INT8, INT8], shape, args.rounds, args.repeats)
        original = space.original["latency_ms"]
        choice = {k: v for k, v in space.round_to_choice.items() if k != "measurement"}
        rows.append(
            {
                **row,
                "round_to": choice,
                "round_to_measurement": space.round_to_choice.get("measurement"),
                "table_dense_ms": original,
                "budget_ms": space.budget,
                "flops_ratio": count_flops(cut, shape) / flops,
                "kept_channels": space.kept(policy),
                "predicted_ms": predicted,
                "predicted_ratio": predicted / original,
                "cut_fp32_ms": cut_fp32,
                "cut_int8_ms": cut_int8,
                "dense_int8_ms_beside": dense_int8,
                "measured_ratio": cut_int8 / dense_int8,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the rows (with the command) as JSON."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet56", "mobilenetv2", "resnet18w"])
    ap.add_argument("--size", type=int, default=64, help="input pixels (square)")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.65, 0.5], help="latency fractions")
    ap.add_argument("--grid", type=int, default=6, help="latency table widths per dimension (a job's: 6)")
    ap.add_argument("--table-repeats", type=int, default=5, help="runs per table entry")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the end-to-end timing")
    ap.add_argument("--repeats", type=int, default=20, help="runs per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="results file (default bench/results/int8-latency-SIZEpx.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or RESULTS / f"int8-latency-{args.size}px.json")
    call = this_call("bench.int8_latency", argv)
    load_start = os.getloadavg()
    rows = [r for name in args.models for r in bench_network(name, args)]
    load_end = os.getloadavg()
    header = ["model", "target", "round_to", "FP32 dense", "INT8 dense", "INT8 cut predicted", "INT8 cut measured"]
    header += ["predicted ratio", "measured ratio", "FLOPs ratio", "FP32 cut"]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r["target"], "", f"{r['dense_fp32_ms']:.2f}", f"{r['dense_int8_ms']:.2f}"])
            table[-1] += [r["error"][:60], "", "", "", "", ""]
            continue
        table.append(
            [
                r["model"],
                r["target"],
                r["round_to"]["value"],
                f"{r['dense_fp32_ms']:.2f}",
                f"{r['dense_int8_ms']:.2f}",
                f"{r['predicted_ms']:.2f}",
                f"{r['cut_int8_ms']:.2f}",
                f"{r['predicted_ratio']:.3f}",
                f"{r['measured_ratio']:.3f}",
                f"{r['flops_ratio']:.3f}",
                f"{r['cut_fp32_ms']:.2f}",
            ]
        )
    print(
        f"input 3x{args.size}x{args.size}, batch 1, {args.threads} thread(s), ms; load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end\n"
    )
    print(markdown_table(header, table))
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average_start": load_start,
        "load_average_end": load_end,
        "rows": rows,
    }
    write_results(out, record, [call])
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
