"""Benchmark of the search strategies (run by hand; not part of the test suite).

Every strategy prunes the same trained model to the same FLOPs budgets (50% and 70%
reduction by default), then the winner gets the same fine-tune; over several seeds we report
test accuracy mean ± std, search wall time and candidates per second, beside two baselines:
uniform L1 (our `uniform` strategy) and Torch-Pruning's own global magnitude pruning
(`MetaPruner` + `GroupMagnitudeImportance`, `global_pruning=True`, its channel ratio bisected
onto the same FLOPs budget). It also measures EagleEye's claim: the Spearman rank correlation
between the adaptive-BN score of random sub-nets and their accuracy after a short fine-tune,
against the same for plain validation without recalibration.

    python -m bench.strategies                                   # Fashion-MNIST, full settings
    python -m bench.strategies --data digits --quick --seeds 0   # a quick run
    python -m bench.strategies --data cifar10:/data/cifar10 --model resnet56

Writes --out/results.json (the rows, the correlation, the base weights and their SHA-256, and
`calls`: the call that wrote it) and --out/results.md.

Reproducible: the same command gives the same numbers on the same machine (a fixed `--threads`,
deterministic kernels, every row re-seeded from its own seed, the trained model cached in --out
by a hash of model, data, training settings and seed); another CPU model picks other kernels and
can move a row's accuracy (`bench/variation.py` measures how far).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    base_model,
    default_evaluator,
    eval_context,
    input_shape,
    markdown_table,
    spearman,
    this_call,
    write_results,
)
from bench.peers import torch_pruning_global  # the same peer call as bench/hard.py
from pruning.bn import recalibrate_bn
from pruning.data import calibration_batches, load_dataset
from pruning.device import get_device
from pruning.measure import count_flops
from pruning.train import FinetuneConfig, TrainConfig, evaluate, make_reproducible, train
from search.base import SearchError
from search.evaluators import make_evaluator
from search.registry import list_strategies, make_strategy
from search.runner import run_search
from search.space import SearchSpace
from secateurs.common import CliError, parse_kv, parse_value
from workers.pipeline import finetune_policy

FULL = {
    "sensitivity": {},
    "eagleeye": {"n_samples": 50, "top_k": 3, "finetune_steps": 100},
    "netadapt": {},  # the default schedule: steps the median group can give alone
    "optuna": {"n_trials": 30},
}
QUICK = {
    "sensitivity": {"rates": [0.2, 0.4, 0.6, 0.8]},
    "eagleeye": {"n_samples": 12, "top_k": 2, "finetune_steps": 20},
    "netadapt": {},
    "optuna": {"n_trials": 10, "n_startup_trials": 5},
}
EVAL_OPTIONS = {"full": {"finetune": {"steps": 50}}, "quick": {"finetune": {"steps": 10}}}


def correlation(model, data, shape, calib, target: str, samples: int, steps: int, seed: int) -> dict[str, Any]:
    """EagleEye's claim: rank correlation of adaptive-BN and plain scores with fine-tuned accuracy."""
    space = SearchSpace(model, shape, target, calibration=calib)
    ctx = eval_context(model, data, space, calib, seed)
    sampler = make_strategy("eagleeye", space, seed=seed, n_samples=samples, top_k=0)
    plain, abn = make_evaluator("plain", ctx), make_evaluator("adaptive-bn", ctx)
    tuned = make_evaluator("finetune", ctx, steps=steps)
    rows = []
    for _ in range(samples):
        policy = sampler.random_policy()
        rows.append((plain.evaluate(policy).score, abn.evaluate(policy).score, tuned.evaluate(policy).score))
    p, a, t = map(list, zip(*rows, strict=True))
    return {
        "samples": samples,
        "target": target,
        "finetune_steps": steps,
        "rho_adaptive_bn": spearman(a, t),
        "rho_plain": spearman(p, t),
        "plain_mean": statistics.mean(p),
        "adaptive_bn_mean": statistics.mean(a),
        "finetuned_mean": statistics.mean(t),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=None, help="training images kept (default: all)")
    ap.add_argument(
        "--input-size", type=int, default=None, help="resize images to this side (default: the data set's own)"
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads, fixed so a row repeats bit for bit (default 2)"
    )
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", help="trained weights; default: train and cache in --out")
    ap.add_argument("--train-epochs", type=float, default=10)
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--reductions", type=float, nargs="+", default=[0.5, 0.7], help="FLOPs reductions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=None, help="default: every registered strategy")
    ap.add_argument("--quick", action="store_true", help="small candidate counts")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="STRATEGY.KEY=VALUE",
        help="override a strategy option (value parsed as JSON), e.g. eagleeye.n_samples=200",
    )
    ap.add_argument("--val-batches", type=int, default=None)
    ap.add_argument("--corr-samples", type=int, default=30, help="0 skips EagleEye's correlation check")
    ap.add_argument("--corr-target", default="flops=0.5", help="the budget of the correlation check's sub-nets")
    ap.add_argument("--corr-steps", type=int, default=None, help="its fine-tune steps (default 5x the evaluator's)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip Torch-Pruning's global pruning")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/bench-strategies")
    args = ap.parse_args(argv)

    make_reproducible(0, args.threads)
    device = get_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, input_size=args.input_size, subset=args.subset, seed=0)
    shape = input_shape(data)
    # the trained model is cached by a hash of everything that decides its weights
    tcfg = TrainConfig(epochs=args.train_epochs, lr=0.05, seed=0)
    data_facts = {"name": args.data, "input_size": data.input_size, "subset": args.subset, "split_seed": 0}
    base = base_model(args.model, data, tcfg, data_facts, out, device, args.weights)
    model, weights = base.model, base.path
    base_acc = evaluate(model, data.test)
    mode = "quick" if args.quick else "full"
    options = copy.deepcopy(QUICK if args.quick else FULL)
    overridden: dict[str, list[str]] = {}
    for item in args.option:
        try:
            key, value = parse_kv(item)
        except CliError as exc:
            ap.error(str(exc))
        name, dot, opt = key.partition(".")
        if not dot:
            ap.error(f"--option wants STRATEGY.KEY=VALUE, got {item!r}")
        options.setdefault(name, {})[opt] = parse_value(value)
        overridden.setdefault(name, []).append(f"{opt}={value}")
    names = args.strategies or list_strategies()
    corr = None
    if args.corr_samples > 0:
        corr = correlation(
            model,
            data,
            shape,
            calibration_batches(data.train, 4, 64, seed=0),
            args.corr_target,
            args.corr_samples,
            args.corr_steps or EVAL_OPTIONS[mode]["finetune"]["steps"] * 5,
            0,
        )
        print(json.dumps({"correlation": corr}), file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for red in args.reductions:
        target = f"flops={1 - red:.4g}"
        for seed in args.seeds:
            calib = calibration_batches(data.train, 4, 64, seed=seed)
            space = SearchSpace(model, shape, target, calibration=calib)
            for name in names:
                make_reproducible(seed)  # each row starts from its seed alone, whatever ran before it
                try:
                    ctx = eval_context(model, data, space, calib, seed, device, args.val_batches)
                    ev = default_evaluator(name, ctx, EVAL_OPTIONS[mode])
                    strategy = make_strategy(name, space, seed=seed, **options.get(name, {}))
                    outcome = run_search(strategy, ev)
                    ft = FinetuneConfig(epochs=args.finetune_epochs, lr=0.01, seed=seed)
                    acc = finetune_policy(model, space, outcome.best.policy, data, calib, ft, device).accuracy_after
                    label = f"{name} ({', '.join(overridden[name])})" if name in overridden else name
                    rows.append(
                        {
                            "reduction": red,
                            "seed": seed,
                            "method": label,
                            "accuracy": acc,
                            "flops_fraction": outcome.best.flops / space.original["flops"],
                            "search_seconds": outcome.seconds,
                            "candidates": len(outcome.results),
                        }
                    )
                except (SearchError, ImportError, NotImplementedError) as exc:
                    print(f"skipping {name}: {exc}", file=sys.stderr)
                    continue
                print(json.dumps(rows[-1]), file=sys.stderr)
            if not args.baseline:
                continue
            make_reproducible(seed)
            t0 = time.perf_counter()
            tp_model = torch_pruning_global(model, shape, space.budget, 0.9)
            seconds = time.perf_counter() - t0
            recalibrate_bn(tp_model, calib)
            train(tp_model, data.train, TrainConfig(epochs=ft.epochs, lr=ft.lr, seed=seed), device=device)
            rows.append(
                {
                    "reduction": red,
                    "seed": seed,
                    "method": "torch-pruning global",
                    "accuracy": evaluate(tp_model, data.test),
                    "flops_fraction": count_flops(tp_model, shape) / space.original["flops"],
                    "search_seconds": seconds,
                    "candidates": 14,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    table = render(rows, base_acc, args, corr)
    write_results(
        out / "results.json",
        {
            "rows": rows,
            "correlation": corr,
            "base_accuracy": base_acc,
            "base_weights": str(weights),
            "base_sha256": base.sha256,
            "threads": args.threads,
            "torch": torch.__version__,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        [this_call("bench.strategies", argv)],
    )
    (out / "results.md").write_text(table)
    print(table)
    return 0


def rho(value: float | None) -> str:
    """A Spearman ρ for the text ("undefined" where `bench.common.spearman` gives None)."""
    return "undefined" if value is None else f"{value:.3f}"


def render(rows: list[dict[str, Any]], base_acc: float, args: argparse.Namespace, corr: dict[str, float] | None) -> str:
    """The Markdown table: one row per (reduction, method), mean ± std over seeds."""
    head = (
        f"Unpruned {args.model} on {args.data} at {args.input_size or 'its own size'} px: "
        f"test accuracy {base_acc:.4f}; fine-tune {args.finetune_epochs} epochs for every method; "
        f"seeds {args.seeds}; {args.threads} torch threads."
    )
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["reduction"], r["method"]), []).append(r)
    cells = []
    for (red, method), rs in groups.items():
        accs = [r["accuracy"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        secs = statistics.mean(r["search_seconds"] for r in rs)
        cps = statistics.mean(r["candidates"] / max(1e-9, r["search_seconds"]) for r in rs)
        frac = statistics.mean(r["flops_fraction"] for r in rs)
        cells.append(
            [
                f"{red:.0%}",
                method,
                f"{statistics.mean(accs):.4f} ± {std:.4f}",
                f"{frac:.3f}",
                f"{secs:.1f}",
                f"{cps:.2f}",
            ]
        )
    header = ["FLOPs cut", "method", "accuracy (mean ± std)", "FLOPs kept", "search s", "candidates/s"]
    lines = [head, "", markdown_table(header, cells)]
    if corr is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        (
            f"EagleEye's claim ({corr['samples']} random sub-nets at {corr.get('target', 'flops=0.5')}, "
            f"fine-tuned {corr['finetune_steps']} steps): Spearman ρ with fine-tuned accuracy = "
            f"{rho(corr['rho_adaptive_bn'])} for adaptive-BN scores, "
            f"{rho(corr['rho_plain'])} for plain validation (mean scores: plain {corr['plain_mean']:.3f}, "
            f"adaptive BN {corr['adaptive_bn_mean']:.3f}, fine-tuned {corr['finetuned_mean']:.3f})."
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
