"""Where each method puts the channels: per-stage kept fractions of a cut resnet (the blocks'
inner width, conv1, and the residual stream, conv2 and shortcut: the layers of the groups the
dependency graph marks `stream`), read from the hard setting's
job reports (`bench/hard.py --out`, default runs/bench-hard) and, with `--fastnas`, from
ModelOpt's FastNAS cut of the same base model (needs scripts/install-peers.sh, PYTHONPATH=.peers).
Run by hand; not part of the suite.

    PYTHONPATH=.:.peers python -m bench.allocation --fastnas

Writes --results with `calls` (the call that wrote it) and, with --fastnas, the base weights'
SHA-256.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import nn

from bench.common import sha256_file, this_call, write_results


def stream_layers(model: nn.Module, shape: tuple[int, ...]) -> set[str]:
    """The layers whose output channels a residual add joins (`ChannelGroup.stream`)."""
    from pruning.graph import DependencyGraph

    graph = DependencyGraph(model, torch.randn(1, *shape))
    return {m for g in graph.groups if g.stream for m in g.members}


def stages(channels: dict[str, list[int]], streams: set[str]) -> dict[str, float]:
    """Mean kept fraction per stage and kind ("stream": a residual stream's layers; "inner": the rest)."""
    out: dict[tuple[str, str], list[float]] = {}
    for name, (kept, original) in channels.items():
        if name.startswith("layer"):
            kind = "stream" if name in streams else "inner"
            out.setdefault((name.split(".")[0], kind), []).append(kept / original)
    return {f"{s}.{k}": round(statistics.mean(v), 3) for (s, k), v in sorted(out.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/bench-hard/resnet56/flops=0.2")
    ap.add_argument("--rows", nargs="+", default=["uniform", "eagleeye", "eagleeye, streams whole"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fastnas", action="store_true", help="also cut the base with FastNAS (--ratio)")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--weights", default="bench/results/bases/base-resnet56-fashion-mnist-16px-10000-10ep.safetensors")
    ap.add_argument("--results", default="bench/results/allocation-resnet56-fashion-mnist-16px-flops20.json")
    args = ap.parse_args(argv)
    from pruning.export import load_weights
    from pruning.models import build_model

    model = build_model("resnet56", num_classes=10, in_channels=1, input_size=16)
    streams = stream_layers(model, (1, 16, 16))
    result: dict[str, dict] = {}
    for row in args.rows:
        for seed in args.seeds:
            report = Path(args.runs) / f"seed{seed}" / row.replace(" ", "_") / "report.json"
            if report.exists():
                result[f"{row} seed {seed}"] = stages(json.loads(report.read_text())["layer_channels"], streams)
    if args.fastnas:
        from bench import peers
        from pruning.data import load_dataset

        torch.set_num_threads(1)
        data = load_dataset("fashion-mnist", input_size=16, subset=10000, seed=0)
        load_weights(model, args.weights)
        torch.manual_seed(0)
        cut = peers.modelopt_fastnas(model.eval(), data, (1, 16, 16), args.ratio)
        original = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        kept = {n: [m.out_channels, original[n]] for n, m in cut.named_modules() if isinstance(m, nn.Conv2d)}
        result["fastnas"] = stages(kept, streams)
        result["fastnas layers"] = kept
        result["base_files"] = {"resnet56": {"path": args.weights, "sha256": sha256_file(args.weights)}}
    write_results(args.results, result, [this_call("bench.allocation", argv)])
    for name, row in result.items():
        if name not in ("fastnas layers", "base_files"):
            print(name, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
