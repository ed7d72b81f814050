"""Distillation against classification as the final fine-tune's task (run by hand; not part of
the test suite).

One base model is trained on the data (cached), cut once per seed to the FLOPs target by a
strategy's search (its default evaluator, classification scores, as a job would), its BN
statistics re-estimated; the same cut network is then fine-tuned by `pruning.train.finetune`
two ways with the same settings and budget:

- `classification`: cross-entropy on the labels, validated by accuracy;
- `distillation`: the `distillation` task (`pruning.tasks`): KL at temperature T to the
  unpruned network's outputs on the same images, no label read, validated by fidelity.

Each row gives the test accuracy (labels) and test fidelity (top-1 agreement with the unpruned
network) of both; the table gives mean ± std over seeds.

    python -m bench.distill                                          # fashion-mnist 16 px, resnet20, 50% FLOPs
    python -m bench.distill --subset 2000 --budget 200 --model convnet --seeds 0,1,2   # a quick run

Writes the rows, a Markdown table, the base weights' SHA-256 and `calls` as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    RESULTS,
    ROOT,
    base_model,
    default_evaluator,
    eval_context,
    input_shape,
    markdown_table,
    this_call,
    write_results,
)
from pruning.bn import recalibrate_bn
from pruning.data import calibration_batches, dataset_size, load_dataset
from pruning.device import get_device
from pruning.tasks import make_task
from pruning.train import FinetuneConfig, TrainConfig, evaluate, finetune
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace

TASKS = ("classification", "distillation")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def searched_policy(
    strategy: str, model: torch.nn.Module, data: Any, shape: tuple[int, ...], target: str, seed: int, device: Any
) -> tuple[dict[str, float], SearchSpace, list, dict[str, Any]]:
    """The best policy of `strategy` with its default evaluator, and the space and calibration."""
    calib = calibration_batches(data.train, 4, 64, seed=seed)
    space = SearchSpace(model, shape, target, calibration=calib)
    ev = default_evaluator(strategy, eval_context(model, data, space, calib, seed, device))
    outcome = run_search(make_strategy(strategy, space, seed=seed), ev)
    if outcome.best is None:
        raise SystemExit(f"{strategy} found no policy")
    best = outcome.best
    info = {
        "evaluator": ev.name,
        "search_score": best.score,
        "candidates": len(outcome.results),
        "flops_fraction": best.flops / space.original["flops"],
    }
    return dict(best.policy), space, calib, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--subset", type=int, default=10000, help="training images kept (0: all)")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default=None, help="trained weights (default: trained once, cached in runs/)")
    ap.add_argument("--train-epochs", type=float, default=10.0)
    ap.add_argument("--train-lr", type=float, default=0.05)
    ap.add_argument("--target-flops", type=float, default=0.5, help="FLOPs kept, as a fraction")
    ap.add_argument("--strategy", default="eagleeye", help="the search that picks the widths (one per seed)")
    ap.add_argument("--budget", type=int, default=1000, help="fine-tune steps (max_steps; patience may end it)")
    ap.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="JSON (default bench/results/distill-DATA-MODEL-...json)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    subset = args.subset or None
    data_name = args.data.split(":")[0]
    tag = f"{data_name}-{args.input_size}px-{args.model}-{subset or 'all'}-flops{args.target_flops:g}-{args.budget}"
    out = Path(args.out or RESULTS / f"distill-{tag}.json")
    data = load_dataset(args.data, input_size=args.input_size, subset=subset, seed=0)
    shape = input_shape(data)
    facts = {"name": args.data, "input_size": data.input_size, "subset": subset, "split_seed": 0}
    base = base_model(
        args.model,
        data,
        TrainConfig(epochs=args.train_epochs, lr=args.train_lr, seed=0),
        facts,
        ROOT / "runs" / "distill",
        device,
        args.weights,
    )
    teacher = base.model
    info = {
        "base_accuracy": evaluate(teacher, data.test),
        "base_sha256": base.sha256,
        "train_images": dataset_size(data.train),
    }
    print(json.dumps(info), file=sys.stderr)
    settings = replace(FinetuneConfig(), max_steps=args.budget)
    fidelity = make_task("distillation", teacher=teacher, temperature=args.temperature)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        policy, space, calib, found = searched_policy(
            args.strategy, teacher, data, shape, f"flops={args.target_flops:g}", seed, device
        )
        for task_name in TASKS:
            task = make_task(
                task_name, teacher=teacher, **({"temperature": args.temperature} if task_name == "distillation" else {})
            )
            pruned = space.cut(policy, model=teacher)
            recalibrate_bn(pruned, calib)
            cut_accuracy = evaluate(pruned, data.test)
            o = finetune(pruned, data, replace(settings, seed=seed), device=device, task=task)
            row = {
                "seed": seed,
                "task": task_name,
                **found,
                "cut_test_accuracy": cut_accuracy,
                "steps": o.steps,
                "stopped_early": o.stopped_early,
                "val_score": o.best_val,
                "test_accuracy": evaluate(pruned, data.test),
                "test_fidelity": evaluate(pruned, data.test, task=fidelity),
                "seconds": o.seconds,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    table = render(rows, info["base_accuracy"], args)
    result = {"config": vars(args), "finetune": asdict(settings), **info, "rows": rows, "table": table}
    write_results(out, result, [this_call("bench.distill", argv)])
    print(table)
    return 0


def _mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def render(rows: list[dict[str, Any]], base_accuracy: float, args: argparse.Namespace) -> str:
    """Markdown: per task, test accuracy and test fidelity (mean ± std over seeds), steps run."""
    head = (
        f"{args.model} on {args.data} ({args.input_size} px, {args.subset or 'all'} training images; base test "
        f"accuracy {base_accuracy:.4f}), cut by {args.strategy} to {args.target_flops:.0%} FLOPs, fine-tuned "
        f"at most {args.budget} steps; seeds {args.seeds}; ± is the std over seeds."
    )
    body = []
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        if mine:
            body.append(
                [
                    task,
                    _mean_std([r["cut_test_accuracy"] for r in mine]),
                    _mean_std([r["test_accuracy"] for r in mine]),
                    _mean_std([r["test_fidelity"] for r in mine]),
                    f"{statistics.mean(r['steps'] for r in mine):.0f}",
                ]
            )
    header = ["fine-tune task", "test accuracy cut", "test accuracy after", "test fidelity after", "steps"]
    return head + "\n\n" + markdown_table(header, body)


if __name__ == "__main__":
    raise SystemExit(main())
