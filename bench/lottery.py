"""Lottery Ticket on the convnet / digits: dense vs rewound ticket vs random reinit, over seeds.

Run by hand:  python -m bench.lottery [--sparsity 0.8] [--rounds 4] [--epochs 8] [--lr 0.01] [--seeds 0 1 2]
              [--data fashion-mnist --subset 3000] [--out bench/results/lottery-....json]

For each seed: build the convnet (seed s), run `pruning.unstructured.lottery_ticket`
(iterative magnitude pruning, per-layer masks, survivors rewound to their initial values,
`--rewind-step` for late rewinding), and train the final mask from a fresh initialisation
(seed s + 100) as the control. Every training run uses the same schedule (SGD + cosine,
`--epochs` per round). Accuracies are on the data set's test split; prints mean and std.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from bench.common import this_call, write_results
from pruning import build_model
from pruning.data import load_dataset
from pruning.train import TrainConfig
from pruning.unstructured import lottery_ticket, sparsity


def run_seed(seed: int, args: argparse.Namespace, data) -> dict:
    """Dense, ticket and reinit accuracies of one seed."""
    torch.manual_seed(seed)
    shape = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}
    model = build_model("convnet", **shape)
    torch.manual_seed(seed + 100)
    control = build_model("convnet", **shape)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=64, seed=seed)
    res = lottery_ticket(
        model, data.train, args.sparsity, args.rounds, cfg, args.scope, args.rewind_step, control, data.test
    )
    return {
        "seed": seed,
        "dense": res.extra["dense_accuracy"],
        "ticket": res.history[-1].accuracy,
        "reinit": res.extra["reinit_accuracy"],
        "sparsity": sparsity(model)["overall"],
        "rounds": [(r.sparsity, r.accuracy) for r in res.history],
    }


def _fmt(values: list[float]) -> str:
    mean = statistics.mean(values) * 100
    std = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def main() -> int:
    """Run every seed and print a Markdown table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=8)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--scope", choices=["layer", "global"], default="layer")
    ap.add_argument("--rewind-step", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--subset", type=int, default=None, help="seeded subset of the training split")
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="also print the per-seed rows as JSON")
    ap.add_argument("--out", help="write the settings, per-seed rows and this call to this results file")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, input_size=args.input_size, seed=0, subset=args.subset)
    t0 = time.time()
    rows = [run_seed(s, args, data) for s in args.seeds]
    print(
        f"convnet on {args.data} ({data.input_size}x{data.input_size}, {len(data.train)} training images, "
        f"test split of {len(data.test)} images), {args.sparsity:.0%} sparsity in "
        f"{args.rounds} rounds ({args.scope} masks), {args.epochs:g} epochs per training, "
        f"rewind step {args.rewind_step}, seeds {args.seeds}, {time.time() - t0:.0f} s\n"
    )
    print("| network | test accuracy % (mean ± std) | per seed |")
    print("|---|---:|---|")
    for key, label in (
        ("dense", "dense"),
        ("ticket", f"rewound ticket ({args.sparsity:.0%} sparse)"),
        ("reinit", f"random reinit, same mask ({args.sparsity:.0%} sparse)"),
    ):
        vals = [r[key] for r in rows]
        print(f"| {label} | {_fmt(vals)} | {', '.join(f'{v * 100:.2f}' for v in vals)} |")
    if args.json:
        print(json.dumps(rows))
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "out")}
        record = {"config": settings, "train_images": len(data.train), "test_images": len(data.test), "rows": rows}
        write_results(args.out, record, [this_call("bench.lottery", argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
