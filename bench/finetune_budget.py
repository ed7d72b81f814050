"""Final fine-tune budget benchmark (run by hand; not part of the test suite).

One trained model is cut to a FLOPs target by each strategy (uniform, and a searched one such
as NetAdapt, found with `search.runner.run_search` as the job does); each cut network is then
fine-tuned by `pruning.train.finetune` at several step budgets, and its test accuracy is
reported against the steps it actually ran. Per budget and strategy, three ways:

- `budget`: the whole budget, cosine schedule, no early stop (what that many steps can give);
- `default`: the defaults (`FinetuneConfig()`: cosine envelope over the budget, plateau
  decays, patience, early stop) with the budget as `max_steps` (what a job gets when the user
  sets that budget);
- and once per strategy, the old fixed-length fine-tune (`pruning.train.train`, lr 0.01,
  `--epochs-baselines` epochs, last weights), the behaviour before `finetune` existed.

    python -m bench.finetune_budget                                  # digits, resnet20, 40% FLOPs
    python -m bench.finetune_budget --data fashion-mnist --subset 10000 --budgets 200,1000,3000

Writes the rows, a Markdown table, the base weights' SHA-256 and `calls` (the call that wrote it)
as JSON (`--out`) and the plot (`--plot`); docs/finetune.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
from pruning.train import FinetuneConfig, TrainConfig, evaluate, finetune, train
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace

NO_STOP = 10**9  # patience that never runs out


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def search_policy(
    name: str,
    model: torch.nn.Module,
    data: Any,
    shape: tuple[int, ...],
    target: str,
    seed: int,
    device: Any,
    eval_steps: int,
    cache: Path | None = None,
) -> tuple[dict[str, float], SearchSpace, list, dict[str, Any]]:
    """The best policy of strategy `name` (its default evaluator, as the job builds it), read
    from `cache` when a previous run saved it there."""
    calib = calibration_batches(data.train, 4, 64, seed=seed)
    space = SearchSpace(model, shape, target, calibration=calib)
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        return saved["policy"], space, calib, {**saved["info"], "cached": True}
    ev = default_evaluator(
        name, eval_context(model, data, space, calib, seed, device), {"finetune": {"steps": eval_steps}}
    )
    ev_name = ev.name
    outcome = run_search(make_strategy(name, space, seed=seed), ev)
    best = outcome.best
    if best is None:
        raise SystemExit(f"{name} found no policy")
    info = {
        "evaluator": ev_name,
        "search_score": best.score,
        "search_seconds": outcome.seconds,
        "candidates": len(outcome.results),
        "flops_fraction": best.flops / space.original["flops"],
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"policy": dict(best.policy), "info": info}))
    return dict(best.policy), space, calib, info


def cut_model(model: torch.nn.Module, space: SearchSpace, policy: dict[str, float], calib: list) -> torch.nn.Module:
    """The cut network of a policy with its BN statistics re-estimated (the job's starting point)."""
    pruned = space.cut(policy, model=model)
    recalibrate_bn(pruned, calib)
    return pruned


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--subset", type=int, default=None, help="training images kept (fashion-mnist, cifar10)")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default=None, help="trained weights (default: trained once, cached in runs/)")
    ap.add_argument("--train-epochs", type=float, default=2.0)
    ap.add_argument("--train-lr", type=float, default=0.05)
    ap.add_argument("--target-flops", type=float, default=0.4, help="FLOPs kept, as a fraction")
    ap.add_argument("--budgets", type=_ints, default=[50, 100, 200, 500, 1000, 2000, 3000])
    ap.add_argument(
        "--epochs-baselines", type=_floats, default=[1, 5, 20], help="old fixed-length fine-tunes (lr 0.01), epochs"
    )
    ap.add_argument("--seeds", type=_ints, default=[0])
    ap.add_argument("--strategies", default="uniform,netadapt")
    ap.add_argument("--eval-steps", type=int, default=50, help="steps of the finetune evaluator (NetAdapt's)")
    ap.add_argument("--lr", type=float, default=None, help="fine-tune learning rate (default: FinetuneConfig's)")
    ap.add_argument(
        "--schedule", default=None, help="fine-tune schedule of the default runs (default: FinetuneConfig's)"
    )
    ap.add_argument("--modes", default="old,default,budget", help="which of old, default, budget to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="JSON (default bench/results/finetune-budget-DATA.json)")
    ap.add_argument("--plot", default=None, help="PNG (default docs/finetune-budget.png for digits, none otherwise)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    modes = set(args.modes.split(","))
    tag = f"{args.model}-{args.data.split(':')[0]}-{args.input_size}px-{args.subset or 'all'}-{args.train_epochs:g}ep"
    cache_dir = ROOT / "runs" / "finetune-budget"
    out = Path(args.out or RESULTS / f"finetune-budget-{args.data.split(':')[0]}.json")
    plot = args.plot
    if plot is None and args.data == "digits":
        plot = str(ROOT / "docs" / "finetune-budget.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, input_size=args.input_size, subset=args.subset, seed=0)
    shape = input_shape(data)
    facts = {"name": args.data, "input_size": data.input_size, "subset": args.subset, "split_seed": 0}
    tcfg = TrainConfig(epochs=args.train_epochs, lr=args.train_lr, seed=0)
    base = base_model(args.model, data, tcfg, facts, cache_dir, device, args.weights)
    model = base.model
    base_acc = evaluate(model, data.test)
    defaults = FinetuneConfig()
    if args.lr is not None:
        defaults = replace(defaults, lr=args.lr)
    if args.schedule is not None:
        defaults = replace(defaults, schedule=args.schedule)
    steps_per_epoch = -(-dataset_size(data.train) // defaults.batch_size)
    target = f"flops={args.target_flops:g}"
    info = {
        "base_accuracy": base_acc,
        "base_sha256": base.sha256,
        "train_images": dataset_size(data.train),
        "steps_per_epoch": steps_per_epoch,
    }
    print(json.dumps(info), file=sys.stderr)

    rows: list[dict[str, Any]] = []
    searches: list[dict[str, Any]] = []

    def record(**row: Any) -> dict[str, Any]:
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    for seed in args.seeds:
        for name in [s for s in args.strategies.split(",") if s]:
            cache = cache_dir / f"{tag}-{name}-{target}-seed{seed}-eval{args.eval_steps}.json"
            policy, space, calib, found = search_policy(
                name, model, data, shape, target, seed, device, args.eval_steps, cache
            )
            searches.append({"strategy": name, "seed": seed, **found})
            print(json.dumps(searches[-1]), file=sys.stderr, flush=True)
            key = {"strategy": name, "seed": seed}

            for e in args.epochs_baselines if "old" in modes else []:
                pruned = cut_model(model, space, policy, calib)
                t0 = time.perf_counter()
                old = TrainConfig(epochs=e, lr=0.01, batch_size=defaults.batch_size, seed=seed)
                train(pruned, data.train, old, device=device)
                record(
                    **key,
                    mode="old-epochs",
                    budget=e,
                    steps=round(e * steps_per_epoch),
                    best_step=None,
                    stopped_early=False,
                    start_val=None,
                    val=evaluate(pruned, data.val),
                    test=evaluate(pruned, data.test),
                    seconds=time.perf_counter() - t0,
                )
            for b in sorted(args.budgets):
                runs = []
                if "default" in modes:
                    runs.append(("default", {"max_steps": b, "seed": seed}))
                if "budget" in modes:
                    runs.append(("budget", {"max_steps": b, "seed": seed, "schedule": "cosine", "patience": NO_STOP}))
                for mode, changes in runs:
                    pruned = cut_model(model, space, policy, calib)
                    o = finetune(pruned, data, replace(defaults, **changes), device=device)
                    record(
                        **key,
                        mode=mode,
                        budget=b,
                        steps=o.steps,
                        best_step=o.best_step,
                        stopped_early=o.stopped_early,
                        start_val=o.start_val,
                        val=o.best_val,
                        test=evaluate(pruned, data.test),
                        seconds=o.seconds,
                    )

    table = render(rows, base_acc, args, defaults, steps_per_epoch)
    result = {
        "config": vars(args),
        "finetune_defaults": asdict(defaults),
        **info,
        "searches": searches,
        "rows": rows,
        "table": table,
    }
    write_results(out, result, [this_call("bench.finetune_budget", argv)])
    print(table)
    if plot:
        draw(rows, base_acc, args, Path(plot))
    return 0


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def render(
    rows: list[dict[str, Any]],
    base_acc: float,
    args: argparse.Namespace,
    defaults: FinetuneConfig,
    steps_per_epoch: int,
) -> str:
    """Markdown: per strategy and budget, test accuracy (mean ± std over seeds) and steps run."""
    head = (
        f"{args.model} on {args.data} ({args.input_size} px), trained {args.train_epochs:g} epochs (test "
        f"{base_acc:.4f}), cut to {args.target_flops:.0%} FLOPs; {steps_per_epoch} steps per epoch; seeds "
        f"{args.seeds}; fine-tune lr {defaults.lr}, patience {defaults.patience}, schedule {defaults.schedule}."
    )
    cells = []
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["mode"], r["budget"]), []).append(r)
    label = {
        "old-epochs": "old: train {b:g} epochs (lr 0.01)",
        "default": "default, max_steps {b:g}",
        "budget": "cosine over all {b:g} steps, no early stop",
    }
    for (strategy, mode, budget), rs in groups.items():
        acc, std = _mean_std([r["test"] for r in rs])
        steps = _mean_std([float(r["steps"]) for r in rs])[0]
        cells.append([strategy, label[mode].format(b=budget), f"{acc:.4f} ± {std:.4f}", f"{steps:.0f}"])
    header = ["strategy", "fine-tune", "test accuracy (mean ± std)", "steps run"]
    return f"{head}\n\n{markdown_table(header, cells)}\n"


def draw(rows: list[dict[str, Any]], base_acc: float, args: argparse.Namespace, path: Path) -> None:
    """Test accuracy against the steps each fine-tune ran: one colour per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(strategies):
        c = colours[i % len(colours)]
        for mode, style, marker, text in (
            ("budget", "-", "o", "cosine over the whole budget"),
            ("default", "--", "s", "default (early stop), budget = max_steps"),
            ("old-epochs", ":", "x", "old: fixed epochs, lr 0.01"),
        ):
            pts: dict[float, list[dict]] = {}
            for r in rows:
                if r["strategy"] == s and r["mode"] == mode:
                    pts.setdefault(r["budget"], []).append(r)
            if not pts:
                continue
            xs = [statistics.mean(r["steps"] for r in rs) for rs in pts.values()]
            ys = [_mean_std([r["test"] for r in rs]) for rs in pts.values()]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.errorbar(
                [xs[j] for j in order],
                [ys[j][0] for j in order],
                yerr=[ys[j][1] for j in order],
                linestyle=style,
                marker=marker,
                color=c,
                capsize=2,
                label=f"{s}: {text}",
            )
    ax.axhline(base_acc, color="grey", linewidth=0.8, linestyle="-.", label=f"unpruned ({base_acc:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("fine-tune steps run (batch 64)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{args.model} on {args.data}, {args.target_flops:.0%} FLOPs: final fine-tune budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
