"""`secateurs search`: search per-layer pruning rates for a target, fine-tune the winner and
export it, locally (the same `search.pipeline.run_pipeline` the service's workers run)."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from .common import CliError, emit_json, parse_kv, parse_value, progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `search` command."""
    from search.evaluators import list_evaluators
    from search.registry import list_strategies

    names = list_strategies()
    p = subparsers.add_parser(
        "search", help="search per-layer pruning rates for a target, fine-tune and export",
        description="Search per-layer pruning rates that meet a target, cut and fine-tune the winner, export it. "
                    f"Strategies: {', '.join(names)}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="strategies:\n" + "\n".join(f"  {n}" for n in names)
               + "\n\nexample:\n  secateurs search --model resnet20 --data digits --target flops=0.5 "
                 "--strategy eagleeye --out out/ --json")
    p.add_argument("--model", required=True, help="zoo model name (e.g. resnet20, mobilenetv2, convnet)")
    p.add_argument("--weights", help="trained weights (.safetensors or weights-only .pt); without it the model is trained first")
    p.add_argument("--data", default="digits", help="data set: digits, fashion-mnist, cifar10:PATH, imagefolder:PATH")
    p.add_argument("--input-size", type=int, help="input size in pixels (default: the data set's)")
    p.add_argument("--subset", type=int, help="use only this many training images")
    p.add_argument("--target", required=True, help="flops=0.5, params=120k, memory=2MB, latency=3ms, latency=0.6")
    p.add_argument("--strategy", default="uniform", choices=names, metavar="STRATEGY",
                   help=f"one of: {', '.join(names)} (default uniform)")
    p.add_argument("--evaluator", help=f"one of: {', '.join(list_evaluators())} (default: the strategy's)")
    p.add_argument("--criterion", default="l1", help="channel importance criterion (default l1)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="strategy option (repeatable)")
    p.add_argument("--evaluator-option", action="append", default=[], metavar="KEY=VALUE", help="evaluator option (repeatable)")
    p.add_argument("--train-epochs", type=float, default=2.0, help="epochs to train a model given without weights (default 2)")
    p.add_argument("--finetune-epochs", type=float, default=1.0, help="epochs of the final fine-tune (default 1)")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="learning rate of the final fine-tune")
    p.add_argument("--max-rate", type=float, default=0.9, help="largest rate any group may be cut by (default 0.9)")
    p.add_argument("--prune-stem", action="store_true", help="allow cutting the first conv's channels")
    p.add_argument("--pin", action="append", default=[], metavar="GROUP[=RATE]", help="fix a group's rate (default 0: keep it whole)")
    p.add_argument("--val-batches", type=int, help="validation batches per candidate (default: the whole split)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument("--resume", action="store_true", help="resume an interrupted search from OUT/checkpoint.pt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline config dict for the command-line arguments."""
    pins: dict[str, float] = {}
    for item in args.pin:
        key, _, rate = item.partition("=")
        pins[key] = float(rate) if rate else 0.0
    return {
        "model": {"zoo": args.model, "weights": args.weights},
        "data": {"name": args.data, "input_size": args.input_size, "subset": args.subset},
        "target": args.target,
        "strategy": {"name": args.strategy, "options": {k: parse_value(v) for k, v in map(parse_kv, args.option)}},
        "evaluator": {"name": args.evaluator, "options": {k: parse_value(v) for k, v in map(parse_kv, args.evaluator_option)}},
        "criterion": args.criterion,
        "train": {"epochs": args.train_epochs},
        "finetune": {"epochs": args.finetune_epochs, "lr": args.finetune_lr},
        "space": {"max_rate": args.max_rate, "prune_stem": args.prune_stem, "pinned": pins or None},
        "search": {"val_batches": args.val_batches},
        "seed": args.seed, "device": args.device, "onnx": not args.no_onnx,
    }


def _print_summary(s: dict[str, Any]) -> None:
    lat = lambda v: "n/a" if v is None else f"{v:.3f} ms"  # noqa: E731
    print(f"strategy {s['strategy']} ({s['evaluator']}), target {s['target']}: "
          f"{s['candidates']} candidates in {s['search_seconds']:.1f}s")
    print(f"  accuracy  {s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f} (cut, before fine-tune {s['accuracy_pruned']:.4f})")
    print(f"  FLOPs     {s['flops_before']:,} -> {s['flops_after']:,} ({s['flops_after'] / s['flops_before']:.1%})")
    print(f"  params    {s['params_before']:,} -> {s['params_after']:,} ({s['params_after'] / s['params_before']:.1%})")
    print(f"  latency   {lat(s['latency_ms_before'])} -> {lat(s['latency_ms_after'])}")
    print("  policy (kept / original channels):")
    for key, kept in s["kept_channels"].items():
        print(f"    {key:<28} {kept:>5} / {s['original_channels'][key]:<5} rate {s['policy'].get(key, 0.0):.3f}")
    print(f"  wrote {s['out_dir']}")


def run(args: argparse.Namespace) -> int:
    """Run the search job and print its summary."""
    from search.pipeline import run_pipeline

    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    config = build_config(args)
    bar = progress_bar(1.0, f"search {args.strategy}")

    def on_event(e: dict) -> None:
        if e.get("type") == "phase":
            bar.set_description(f"{args.strategy}: {e.get('phase')}")
        elif "fraction" in e:
            bar.n = round(float(e["fraction"]), 4)
            if e.get("type") == "progress":
                bar.set_postfix_str(f"{e.get('candidates', 0)} cand., best {e.get('best_score') or 0:.4f}")
            bar.refresh()

    try:
        summary = run_pipeline(config, args.out, hooks={"on_event": on_event}, resume=args.out if args.resume else None)
    finally:
        bar.close()
    if summary.get("status") != "done":
        raise CliError(f"search stopped after {summary.get('candidates', 0)} candidates")
    if args.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    sys.stdout.flush()
    return 0
