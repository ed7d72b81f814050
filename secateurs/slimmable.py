"""`secateurs slimmable`: train a slimmable network once for many widths (`train`), and
materialise one width as a plain, physically smaller model (`export`). The trained supernet
feeds `secateurs search --strategy autoslim --option supernet=DIR`."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, emit_json, progress_bar


def _widths(text: str) -> list[float]:
    try:
        widths = sorted({float(w) for w in text.split(",") if w.strip()})
    except ValueError:
        raise CliError(f"--widths must be comma-separated numbers like 0.25,0.5,1.0, got {text!r}") from None
    if not widths or widths[0] <= 0 or widths[-1] > 1:
        raise CliError(f"--widths must lie in (0, 1], got {text!r}")
    return widths


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `slimmable` command group."""
    p = subparsers.add_parser(
        "slimmable",
        help="train slimmable networks (one set of weights, many widths)",
        description="Slimmable networks (Yu et al. 2018) and universally slimmable training (Yu & Huang 2019).",
    )
    sub = p.add_subparsers(dest="slimmable_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train a slimmable supernet and save it (safetensors + JSON)",
        epilog="example:\n  secateurs slimmable train --model resnet20 --data digits "
        "--widths 0.25,0.5,0.75,1.0 --universal --out out/supernet\n"
        "  secateurs search --model resnet20 --strategy autoslim --option supernet=out/supernet "
        "--target flops=0.5 --out out/autoslim",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--model", required=True, help="zoo model name (e.g. resnet20, convnet)")
    t.add_argument("--data", default="digits", help="data set: digits, fashion-mnist, cifar10:PATH, imagefolder:PATH")
    t.add_argument("--input-size", type=int, help="input size in pixels (default: the data set's)")
    t.add_argument("--subset", type=int, help="use only this many training images")
    t.add_argument("--widths", default="0.25,0.5,0.75,1.0", help="width multipliers (default 0.25,0.5,0.75,1.0)")
    t.add_argument(
        "--universal",
        action="store_true",
        help="universally slimmable: any width in [min, max], per layer too (sandwich rule, inplace "
        "distillation, BN calibrated per width); default: switchable BN for the listed widths",
    )
    t.add_argument("--num-random", type=int, default=2, help="random widths per step with --universal (default 2)")
    t.add_argument(
        "--uniform-sampling",
        action="store_true",
        help="with --universal, draw one random width per network instead of one per channel group",
    )
    t.add_argument("--no-distill", action="store_true", help="with --universal, train every width on the labels")
    t.add_argument("--epochs", type=float, default=10.0, help="training epochs (default 10)")
    t.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--calibration-batches", type=int, default=8, help="batches for BN calibration (default 8)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    t.set_defaults(func=run_train)

    e = sub.add_parser("export", help="materialise one width of a supernet as a plain, smaller model")
    e.add_argument("--supernet", required=True, help="folder (or supernet.json) written by `slimmable train`")
    e.add_argument("--width", type=float, required=True, help="width multiplier to export")
    e.add_argument("--data", default="digits", help="data set whose training split calibrates BN (universal nets)")
    e.add_argument("--calibration-batches", type=int, default=8)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="output folder (model.safetensors + arch.json)")
    e.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    e.set_defaults(func=run_export)


def _accuracies(net: Any, data: Any, calib: list) -> dict[str, float]:
    from pruning.slimmable import evaluate_config

    return {f"{w:g}": evaluate_config(net, data.test, w, calib) for w in net.widths}


def run_train(args: argparse.Namespace) -> int:
    """Train the supernet, report each width's test accuracy, save it."""
    from pruning.data import calibration_batches, load_dataset
    from pruning.measure import count_flops
    from pruning.models import build_model
    from pruning.slimmable import SlimTrainConfig, make_slimmable, save_supernet, train_slimmable

    widths = _widths(args.widths)
    if args.epochs <= 0:
        raise CliError("--epochs must be positive")
    data = load_dataset(args.data, input_size=args.input_size, seed=args.seed, subset=args.subset)
    shape = (data.in_channels, data.input_size, data.input_size)
    zoo_args = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}
    model = build_model(args.model, **zoo_args)
    net = make_slimmable(model, shape, widths, universal=args.universal, zoo=args.model, zoo_args=zoo_args)
    cfg = SlimTrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        num_random=args.num_random,
        per_layer=not args.uniform_sampling,
        inplace_distillation=not args.no_distill,
    )
    bar = progress_bar(1.0, f"slimmable {args.model}")

    def progress(fraction: float, info: dict) -> None:
        bar.n = round(fraction, 4)
        bar.set_postfix_str(f"epoch {info['epoch']:.1f} loss {info['loss']:.3f}")
        bar.refresh()

    try:
        train_slimmable(net, data.train, cfg, progress=progress, device=args.device)
    finally:
        bar.close()
    net.cpu()
    calib = calibration_batches(data.train, args.calibration_batches, args.batch_size, args.seed)
    accuracies = _accuracies(net, data, calib)
    flops = {f"{w:g}": count_flops(net.export(w), shape) for w in widths}
    path = save_supernet(
        net, args.out, extra={"data": args.data, "train": vars(cfg), "test_accuracy": accuracies}, calibration=calib
    )
    summary = {
        "supernet": str(path.parent),
        "model": args.model,
        "data": args.data,
        "widths": widths,
        "universal": args.universal,
        "test_accuracy": accuracies,
        "flops": flops,
    }
    if args.json:
        emit_json(summary)
    else:
        kind = "universally slimmable" if args.universal else "slimmable (switchable BN)"
        print(f"{kind} {args.model} on {args.data}, {args.epochs:g} epochs")
        for w in widths:
            print(f"  width {w:<5g} test accuracy {accuracies[f'{w:g}']:.4f}  FLOPs {flops[f'{w:g}']:,}")
        print(f"  wrote {path.parent}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export one width of a saved supernet as a plain zoo model."""
    from pruning.data import calibration_batches, load_dataset
    from pruning.export import save_model
    from pruning.measure import count_flops, count_params
    from pruning.slimmable import calibrate_bn, load_supernet

    net = load_supernet(args.supernet)
    net.set_width(args.width)
    if net.universal:
        data = load_dataset(args.data, input_size=net.input_shape[-1], seed=args.seed)
        calibrate_bn(net, calibration_batches(data.train, args.calibration_batches, 64, args.seed))
    if net.zoo is None:
        raise CliError(f"{args.supernet}: the supernet does not name its zoo model, so it cannot be exported")
    plain = net.export()
    files = save_model(plain, args.out, net.zoo, net.zoo_args)
    summary = {
        "width": args.width,
        "flops": count_flops(plain, net.input_shape),
        "params": count_params(plain),
        "files": {k: str(v) for k, v in files.items()},
    }
    if args.json:
        emit_json(summary)
    else:
        print(f"width {args.width:g}: {summary['flops']:,} FLOPs, {summary['params']:,} params; wrote {args.out}")
    return 0
