"""`secateurs unstructured`: weight masks (magnitude, Han et al.'s iterative prune-retrain,
Lottery Ticket with rewinding and the random-reinit control) on a zoo model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from pruning.data import DataSplits
from pruning.export import save_model
from pruning.measure import count_params
from pruning.models import build_model
from pruning.train import TrainConfig, evaluate, seed_everything, train
from pruning.unstructured import MaskKeeper, han_prune, lottery_ticket, magnitude_prune, sparsity

from .common import CliError, emit_json, progress_bar
from .engine import add_model_args, load_model_and_data

METHODS = ("magnitude", "han", "lottery")


def _progress(bar: Any) -> Any:
    """A `progress` callback that moves a tqdm bar over [0, 1] and shows the latest figures."""

    def step(frac: float, info: dict) -> None:
        bar.n = round(frac, 4)
        bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in info.items()})
        bar.refresh()

    return step


def _run(
    args: argparse.Namespace, model: Any, data: DataSplits, zoo_args: dict[str, Any], bar: Any
) -> tuple[dict[str, Any], Any]:
    """Run the chosen method in place on `model`; returns the report figures and the masks."""
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    out: dict[str, Any] = {}
    if args.method == "lottery":
        reinit = None
        if args.reinit_control:
            seed_everything(args.seed + 1)
            reinit = build_model(args.model, **zoo_args)
        res = lottery_ticket(
            model,
            data.train,
            args.sparsity,
            args.rounds,
            cfg,
            args.scope,
            args.rewind_step,
            reinit,
            data.test,
            _progress(bar),
        )
        out["accuracy_before"] = res.extra["dense_accuracy"]
        if reinit is not None:
            out["reinit_accuracy"] = res.extra["reinit_accuracy"]
        out["rewind_step"] = args.rewind_step
    else:
        out["accuracy_before"] = evaluate(model, data.test)
        if args.method == "magnitude":
            masks = magnitude_prune(model, args.sparsity, args.scope)
            if args.finetune_epochs > 0:
                ft = TrainConfig(epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
                train(model, data.train, ft, after_step=MaskKeeper(masks), progress=_progress(bar))
            res = None
        else:
            first = cfg if not args.weights else None
            retrain = TrainConfig(
                epochs=args.finetune_epochs or 2, lr=args.lr / 5, batch_size=args.batch_size, seed=args.seed
            )
            res = han_prune(
                model,
                data.train,
                args.sparsity,
                args.rounds,
                args.scope,
                args.penalty,
                args.penalty_strength,
                first,
                retrain,
                data.test,
                _progress(bar),
            )
    if res is not None:
        masks = res.masks
        out["rounds"] = [{"round": r.round, "sparsity": r.sparsity, "accuracy": r.accuracy} for r in res.history]
    out["accuracy_after"] = evaluate(model, data.test)
    return out, masks


def _cmd_unstructured(args: argparse.Namespace) -> int:
    if args.method not in METHODS:
        raise CliError(f"unknown method {args.method!r}; choose one of: {', '.join(METHODS)}")
    if not 0.0 < args.sparsity < 1.0:
        raise CliError(f"--sparsity {args.sparsity} is outside (0, 1)")
    if args.rounds < 1:
        raise CliError("--rounds must be at least 1")
    model, data, zoo_args = load_model_and_data(args, warn_random=args.method != "lottery")
    with progress_bar(1.0, f"{args.method} {args.model}", unit="run") as bar:
        out, masks = _run(args, model, data, zoo_args, bar)
    sp = sparsity(model)
    params = count_params(model)
    result = {
        "method": args.method,
        "model": args.model,
        "scope": args.scope,
        "target_sparsity": args.sparsity,
        "sparsity": sp["overall"],
        "params": params,
        "params_nonzero": params - sp["zeros"],
        **out,
        "out": args.out,
    }
    target = Path(args.out)
    save_model(model.cpu(), target, args.model, zoo_args)
    save_file({k: v.detach().cpu().contiguous() for k, v in masks.items()}, str(target / "masks.safetensors"))
    (target / "report.json").write_text(json.dumps(result, indent=1))
    print(f"accuracy  {result['accuracy_before']:.4f} -> {result['accuracy_after']:.4f}")
    if "reinit_accuracy" in result:
        print(f"random reinit control: {result['reinit_accuracy']:.4f}")
    print(
        f"sparsity  {sp['overall']:.2%} of conv/linear weights are zero "
        f"({result['params_nonzero']:,} of {params:,} params non-zero)"
    )
    print(f"exported  {target}")
    if args.json:
        emit_json(result)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `unstructured` to the CLI."""
    p = subparsers.add_parser(
        "unstructured", help="unstructured weight masks: magnitude, Han et al. 2015, Lottery Ticket"
    )
    add_model_args(p)
    p.add_argument("--method", default="magnitude", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of conv/linear weights to zero, in (0, 1)")
    p.add_argument(
        "--scope", choices=["layer", "global"], default="layer", help="threshold per layer or one global threshold"
    )
    p.add_argument("--rounds", type=int, default=3, help="prune rounds (han, lottery); each keeps (1-s)^(1/rounds)")
    p.add_argument("--epochs", type=float, default=5, help="training epochs per round (lottery; han's first training)")
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=0,
        help="retraining epochs after the cut (magnitude; per round for han, default 2)",
    )
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--penalty", choices=["l1", "l2"], default="l2", help="han: weight penalty during training")
    p.add_argument("--penalty-strength", type=float, default=1e-5)
    p.add_argument(
        "--rewind-step", type=int, default=0, help="lottery: rewind to weights after this many steps (0 = init)"
    )
    p.add_argument(
        "--reinit-control", action="store_true", help="lottery: also train the final mask from a random reinit"
    )
    p.add_argument(
        "--out", required=True, help="folder for model.safetensors, arch.json, masks.safetensors, report.json"
    )
    p.set_defaults(func=_cmd_unstructured)
