"""The final pick among EagleEye's candidates: today's fixed top-k fine-tune against Ray Tune
trials under ASHA (`search.selection: asha`), at about the same fine-tune steps (run by hand;
not part of the test suite).

Both arms run the whole job pipeline (`workers.pipeline.run_pipeline`) on the same trained
model (cached by its training key), the same EagleEye samples (same seed) and the same final
fine-tune; only the selection differs:

- top-k: EagleEye's `top_k` best adaptive-BN samples fine-tuned `finetune_steps` each (k x S steps);
- asha: the best `candidates` samples start a trial, ASHA (reduction factor 3) keeps the best
  third at each rung, the longest trial runs S steps; the steps it used are reported.

    python -m bench.selection                            # digits, resnet20, seeds 0 1 2
    python -m bench.selection --seeds 0 --n-samples 20   # a quick run
    # top-k given, per seed, the steps ASHA used in the first run (equal selection steps)
    python -m bench.selection --n-samples 24 --methods top-k --match-steps bench/results/selection-digits.json \
        --results bench/results/selection-digits-equal.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, markdown_table, this_call, write_results
from workers.pipeline import run_pipeline


def job(args: argparse.Namespace, seed: int, method: str) -> dict[str, Any]:
    """The job of one arm and seed."""
    steps = topk_steps(args, seed) if method == "top-k" else args.steps
    eagleeye = {"n_samples": args.n_samples, "top_k": args.top_k, "finetune_steps": steps}
    search: dict[str, Any] = {"batch_size": args.concurrency}
    if method == "asha":
        search.update(
            selection="asha",
            selection_candidates=args.candidates,
            selection_steps=args.steps,
            selection_reduction=args.reduction,
        )
    return {
        "model": {"zoo": args.model},
        "data": {"name": args.data},
        "target": {"flops": 1 - args.reduction_flops},
        "strategy": {"name": "eagleeye", "options": eagleeye},
        "search": search,
        "train": {"epochs": args.train_epochs},
        "finetune": {"epochs": args.finetune_epochs},
        "onnx": False,
        "seed": seed,
    }


def topk_steps(args: argparse.Namespace, seed: int) -> int:
    """Top-k's fine-tune steps per candidate: --steps, or ASHA's total for this seed in the
    --match-steps results divided by k (equal selection steps)."""
    if not args.match_steps:
        return args.steps
    rows = json.loads(Path(args.match_steps).read_text())["rows"]
    asha = [r["selection_steps"] for r in rows if r["method"] == "asha" and r["seed"] == seed]
    if not asha:
        raise SystemExit(f"--match-steps {args.match_steps}: no asha row for seed {seed}")
    return round(asha[0] / args.top_k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--train-epochs", type=float, default=5)
    ap.add_argument("--reduction-flops", type=float, default=0.7, help="FLOPs cut (0.7: keep 30%%)")
    ap.add_argument("--n-samples", type=int, default=30, help="EagleEye's adaptive-BN samples")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100, help="top-k: steps each; asha: steps of the longest trial")
    ap.add_argument("--match-steps", default=None, help="results JSON: top-k gets each seed's ASHA steps / k")
    ap.add_argument("--methods", nargs="+", default=["top-k", "asha"], choices=["top-k", "asha"])
    ap.add_argument("--candidates", type=int, default=9, help="ASHA trials")
    ap.add_argument("--reduction", type=int, default=3, help="ASHA's reduction factor")
    ap.add_argument("--concurrency", type=int, default=2, help="trials (and evaluations) at a time")
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the job process")
    ap.add_argument("--out", default="runs/bench-selection")
    ap.add_argument("--results", default=str(RESULTS / "selection-digits.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for method in args.methods:
            t0 = time.perf_counter()
            load = os.getloadavg()[0]
            s = run_pipeline(job(args, seed, method), out / f"{method}-{seed}", cache_dir=out / "cache")
            sel = s.get("selection")
            rows.append(
                {
                    "seed": seed,
                    "method": method,
                    "accuracy": s["accuracy_after"],
                    "search_score": s["search_score"],
                    "selection_steps": sel["steps"] if sel else args.top_k * topk_steps(args, seed),
                    "trials": sel["candidates"] if sel else args.top_k,
                    "flops_fraction": s["flops_after"] / s["flops_before"],
                    "seconds": time.perf_counter() - t0,
                    "load_average_1min": load,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = render(rows, args)
    record = {"rows": rows, "argv": sys.argv[1:] if argv is None else argv, "table": table}
    write_results(args.results, record, [this_call("bench.selection", argv)])
    print(table)
    return 0


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """A Markdown table: one row per method, mean ± std over seeds."""
    head = (
        f"{args.model} on {args.data}, {args.reduction_flops:.0%} FLOPs cut, EagleEye {args.n_samples} samples, "
        f"final fine-tune {args.finetune_epochs} epochs, seeds {args.seeds}."
    )
    cells = []
    for method in ("top-k", "asha"):
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        acc = [r["accuracy"] for r in rs]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        cells.append(
            [
                method,
                f"{statistics.mean(acc):.4f} ± {std:.4f}",
                f"{statistics.mean(r['selection_steps'] for r in rs):.0f}",
                rs[0]["trials"],
                f"{statistics.mean(r['seconds'] for r in rs):.0f}",
            ]
        )
    header = ["selection", "test accuracy (mean ± std)", "selection fine-tune steps", "trials", "seconds"]
    return f"{head}\n\n{markdown_table(header, cells)}\n"


if __name__ == "__main__":
    sys.exit(main())
