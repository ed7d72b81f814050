"""`secateurs train` and `secateurs prune`: the engine on the command line.

`train` writes `OUT.safetensors` plus a sidecar `OUT.json` (zoo name and arguments); `prune`
cuts a model at one rate (uniform, or with `--global` one threshold over all layers), reports
accuracy, FLOPs, parameters and measured latency before and after, and exports the result."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn

from pruning.bn import recalibrate_bn
from pruning.checkpoint import load_checkpoint, read_sidecar, resolve_args, save_checkpoint
from pruning.criteria import CRITERIA, Criterion, get_criterion, slimming_penalty
from pruning.cut import global_policy, prune
from pruning.data import DATASETS, DataSplits, calibration_batches, load_dataset
from pruning.device import get_device
from pruning.errors import PinnedGroupWarning
from pruning.export import export_onnx, export_torchscript, load_weights
from pruning.intake import intake_program, model_reference
from pruning.measure import count_flops, count_params, measure_latency
from pruning.models import build_model, list_models
from pruning.runtime import RUNTIMES, Runtime
from pruning.train import TrainConfig, evaluate, fit, seed_everything, train
from workers.config import ModelSpec, TrainSpec
from workers.network import build_factory, check_program_data, save_network

from .common import CliError, emit_json, progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm


def check_model(name: str) -> None:
    """Fail early, in one line, on an unknown zoo model."""
    if name not in list_models():
        raise CliError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"secateurs: warning: {message}", file=sys.stderr)


def add_model_args(p: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """The options every engine command shares: model, weights, data and shape."""
    p.add_argument(
        "--model",
        required=True,
        help=f"zoo model ({', '.join(list_models())}), a torch.export program FILE.pt2, or package.module:factory",
    )
    p.add_argument("--weights", required=weights_required, help="safetensors (or weights-only .pt) checkpoint")
    p.add_argument("--data", required=True, help=f"data set: {', '.join(DATASETS)} (cifar10:PATH, imagefolder:PATH)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="image side in pixels (default: the checkpoint's, else the data set's)",
    )
    p.add_argument("--width", type=float, default=None, help="zoo width multiplier (default: the checkpoint's, else 1)")
    p.add_argument("--subset", type=int, default=None, help="use a seeded subset of this many training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (last line of stdout)")


def load_model_and_data(args: argparse.Namespace, warn_random: bool = True) -> tuple[Any, DataSplits, dict[str, Any]]:
    """Data set and model (with `--weights` loaded) for a command; warns (if `warn_random`)
    when there are no weights. `--model` names a zoo model, a `.pt2` program (its weights
    inside; the data must fit its input and outputs) or a `package.module:factory`."""
    kind, ref = model_reference(args.model)
    if kind == "program":
        return _load_program(args, ref)
    if kind == "zoo":
        check_model(args.model)
    weights = getattr(args, "weights", None)
    if weights and not Path(weights).exists():
        raise CliError(f"weights file {weights} does not exist")
    meta = read_sidecar(weights) if weights else None
    size = args.input_size or (meta or {}).get("args", {}).get("input_size")
    data = load_dataset(args.data, input_size=size, seed=args.seed, subset=args.subset)
    zoo_args = resolve_args(args.model, data, weights, args.width)
    seed_everything(args.seed)
    if kind == "factory":
        model = build_factory(ref, **zoo_args)
        if weights:
            load_weights(model, weights)
        elif warn_random:
            warn("no --weights given: the model starts from random initialisation")
        return model, data, zoo_args
    if weights:
        model = load_checkpoint(args.model, zoo_args, weights)
    else:
        if warn_random:
            warn("no --weights given: the model starts from random initialisation")
        model = build_model(args.model, **zoo_args)
    return model, data, zoo_args


def _load_program(args: argparse.Namespace, path: str) -> tuple[Any, DataSplits, dict[str, Any]]:
    """A converted `.pt2` program and the data, which must fit its input and outputs."""
    if getattr(args, "weights", None):
        raise CliError("--weights does not go with a .pt2 program: the program carries its weights")
    intake = intake_program(path)
    data = load_dataset(
        args.data, input_size=args.input_size or intake.input_shape[1], seed=args.seed, subset=args.subset
    )
    shape = (data.in_channels, data.input_size, data.input_size)
    check_program_data(intake.input_shape, intake.outputs, shape, data.num_classes, args.data)
    seed_everything(args.seed)
    return (
        intake.module,
        data,
        {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size},
    )


def _train_spec(args: argparse.Namespace) -> TrainSpec:
    """The training flags, bounded as a job's `train` section is."""
    from pydantic import ValidationError

    fields = ("epochs", "max_epochs", "patience", "lr", "batch_size", "warmup_epochs")
    try:
        return TrainSpec(**{k: getattr(args, k) for k in fields})
    except ValidationError as exc:
        e = exc.errors()[0]
        raise CliError(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from pruning.data import dataset_size
    from workers.pipeline import describe_training, train_settings, training_record

    spec = _train_spec(args)
    if not args.out.endswith(".safetensors"):
        raise CliError("--out must name a .safetensors file")
    if model_reference(args.model)[0] == "program":
        raise CliError("train takes a zoo model or a factory; a .pt2 program is already trained")
    model, data, zoo_args = load_model_and_data(args, warn_random=False)
    cfg = train_settings(spec, "classification", args.seed)
    extra = slimming_penalty(args.slimming_penalty) if args.slimming_penalty > 0 else None
    with progress_bar(1.0, f"train {args.model}", unit="run") as bar:

        def step(frac: float, info: dict) -> None:
            bar.n = round(frac, 4)
            bar.set_postfix(epoch=f"{info['epoch']:.1f}", loss=f"{info['loss']:.3f}")
            bar.refresh()

        outcome = fit(model, data, cfg, extra_loss=extra, progress=step, device=args.device)
    training = training_record(outcome, cfg, dataset_size(data.train))
    accuracy = evaluate(model, data.test)
    sidecar = save_checkpoint(
        model.cpu(),
        args.out,
        args.model,
        zoo_args,
        {"data": args.data, "training": training, "test_accuracy": accuracy},
    )
    print(describe_training(training))
    result = {
        "model": args.model,
        "data": args.data,
        "epochs": training["epochs_run"],
        "training": training,
        "accuracy": accuracy,
        "weights": args.out,
        "sidecar": str(sidecar),
        "args": zoo_args,
    }
    print(f"test accuracy {accuracy:.4f}; weights {args.out}, sidecar {sidecar}")
    if args.json:
        emit_json(result)
    return 0


def _check_rate(rate: float) -> None:
    if not 0.0 < rate < 1.0:
        raise CliError(f"--rate {rate} is outside (0, 1)")


def _summary_lines(r: dict[str, Any]) -> list[str]:
    return [
        f"accuracy  {r['accuracy_before']:.4f} -> {r['accuracy_after']:.4f}",
        f"FLOPs     {r['flops_before']:,} -> {r['flops_after']:,} MACs ({r['flops_after'] / r['flops_before']:.1%})",
        f"params    {r['params_before']:,} -> {r['params_after']:,} ({r['params_after'] / r['params_before']:.1%})",
        (
            f"latency   {r['latency_ms_before']:.3f} -> {r['latency_ms_after']:.3f} ms "
            f"(batch {r['latency_batch_size']}, {r['runtime']}, {r['device']})"
        ),
        f"exported  {r['out']}",
    ]


def _cmd_prune(args: argparse.Namespace) -> int:
    """Cut one rate by a criterion, fine-tune, measure before and after, export."""
    _check_rate(args.rate)
    if model_reference(args.model)[0] == "zoo":
        check_model(args.model)
    criterion = get_criterion(args.criterion)
    if args.finetune_epochs < 0:
        raise CliError("--finetune-epochs must be >= 0")
    device = get_device(args.device)
    model, data, zoo_args = load_model_and_data(args)
    model = model.to(device).eval()
    shape = (data.in_channels, data.input_size, data.input_size)
    out = Path(args.out)
    with progress_bar(5 + args.finetune_epochs, f"prune {args.model}", unit="step") as bar:

        def stage(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        stage("loaded")
        before = _measure(model, data, shape, args.latency_batch_size, args.runtime)
        stage("measured")
        pruned = _cut(args, model, data, shape, criterion)
        stage("cut")
        if args.finetune_epochs:
            _finetune(args, pruned, model, data, device, bar)
        after = _measure(pruned, data, shape, args.latency_batch_size, args.runtime)
        stage("measured")
        onnx_diff = _export(pruned, out, args.model, zoo_args, shape)
        stage("exported")
    result = {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "flops_before": before["flops"],
        "flops_after": after["flops"],
        "params_before": before["params"],
        "params_after": after["params"],
        "latency_ms_before": before["latency_ms"],
        "latency_ms_after": after["latency_ms"],
        "latency_batch_size": args.latency_batch_size,
        "runtime": args.runtime,
        "device": str(device),
        "model": args.model,
        "criterion": args.criterion,
        "rate": args.rate,
        "global": args.global_rank,
        "finetune_epochs": args.finetune_epochs,
        "onnx_max_abs_diff": onnx_diff,
        "out": str(out),
    }
    (out / "report.json").write_text(json.dumps(result, indent=1))
    for line in _summary_lines(result):
        print(line)
    if args.json:
        emit_json(result)
    return 0


def _cut(
    args: argparse.Namespace, model: nn.Module, data: DataSplits, shape: tuple[int, int, int], criterion: Criterion
) -> nn.Module:
    """The cut copy of `model`: one rate everywhere, or ranked globally; BN recalibrated unless asked not to."""
    calibration = calibration_batches(data.train, args.calibration_batches, args.batch_size, args.seed)
    policy: Mapping[str, float] | float = (
        global_policy(model, shape, args.rate, criterion, calibration) if args.global_rank else args.rate
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinnedGroupWarning)
        pruned = prune(model, policy, criterion, input_shape=shape, calibration=calibration, round_to=args.round_to)
    for w in caught:  # a group the engine keeps whole is said, one line each; other warnings pass on
        if issubclass(w.category, PinnedGroupWarning):
            print(f"secateurs: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not args.no_adaptive_bn:
        recalibrate_bn(pruned, calibration)
    return pruned


def _finetune(
    args: argparse.Namespace,
    pruned: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    device: torch.device,
    bar: tqdm[NoReturn],
) -> None:
    """`--finetune-epochs` of SGD (distilled from the unpruned model with `--kd-alpha`), on the progress bar."""
    done = bar.n

    def step(frac: float, info: dict) -> None:
        bar.n = done + frac * args.finetune_epochs
        bar.set_postfix_str(f"fine-tune loss {info['loss']:.3f}")
        bar.refresh()

    cfg = TrainConfig(
        epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, kd_alpha=args.kd_alpha
    )
    train(pruned, data.train, cfg, teacher=teacher if args.kd_alpha > 0 else None, progress=step, device=device)
    bar.n = done + args.finetune_epochs


def _export(pruned: nn.Module, out: Path, zoo: str, zoo_args: dict[str, Any], shape: tuple[int, int, int]) -> float:
    """safetensors + arch.json (a zoo model) or model.pt2 (a program or factory), ONNX (checked;
    returns its largest difference) and TorchScript."""
    save_network(pruned.cpu(), out, ModelSpec.model_validate({"zoo": zoo}), zoo_args, shape)
    onnx_diff = export_onnx(pruned, out / "model.onnx", shape)
    export_torchscript(pruned, out / "model.torchscript.pt", shape)
    return onnx_diff


def _measure(
    model: nn.Module, data: DataSplits, shape: tuple[int, int, int], batch_size: int, runtime: Runtime
) -> dict[str, Any]:
    """Test accuracy, FLOPs, params and latency in the deployment `runtime`."""
    return {
        "accuracy": evaluate(model, data.test),
        "flops": count_flops(model, shape),
        "params": count_params(model),
        "latency_ms": measure_latency(model, shape, batch_size=batch_size, runtime=runtime),
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` and `prune` to the CLI."""
    t = subparsers.add_parser("train", help="train a zoo model on a data set; writes safetensors + a JSON sidecar")
    add_model_args(t)
    d = TrainConfig()  # the one default for training from scratch, as a job's train section has it
    t.add_argument("--epochs", type=float, default=d.epochs, help="fixed length (default: until no gain)")
    t.add_argument("--max-epochs", type=float, default=d.max_epochs, help=f"most epochs (default {d.max_epochs:g})")
    t.add_argument("--patience", type=int, default=d.patience, help=f"epochs without a gain (default {d.patience})")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help=f"epochs of linear learning-rate warm-up (default {d.warmup_epochs:g}, a classifier's)",
    )
    t.add_argument(
        "--slimming-penalty",
        type=float,
        default=0.0,
        help="L1 strength on BN gammas (Network Slimming sparsity training, e.g. 1e-4)",
    )
    t.add_argument("--out", required=True, help="checkpoint path, e.g. ckpt.safetensors (sidecar ckpt.json next to it)")
    t.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("prune", help="cut channels at one rate by a criterion, measure, export")
    add_model_args(p)
    p.add_argument("--criterion", default="l1", help=f"importance criterion: {', '.join(sorted(CRITERIA))}")
    p.add_argument("--rate", type=float, required=True, help="fraction of channels to cut, in (0, 1)")
    p.add_argument(
        "--global",
        dest="global_rank",
        action="store_true",
        help="one global threshold over all layers instead of the same rate per layer",
    )
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--kd-alpha", type=float, default=0.0, help="distil from the unpruned model during fine-tuning")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--calibration-batches",
        type=int,
        default=4,
        help="training batches for data-dependent criteria and adaptive BN",
    )
    p.add_argument("--no-adaptive-bn", action="store_true", help="skip BN recalibration after the cut")
    p.add_argument("--round-to", type=int, default=1, help="round kept channels up to a multiple")
    p.add_argument("--latency-batch-size", type=int, default=1)
    p.add_argument("--runtime", choices=RUNTIMES, default="eager", help="deployment runtime the latency is measured in")
    p.add_argument("--out", required=True, help="folder for model.safetensors, arch.json, model.onnx, report.json")
    p.set_defaults(func=_cmd_prune)
