"""Benchmark of slimmable networks, US-Nets' BN calibration and AutoSlim (run by hand).

    python -m bench.slimmable --model convnet --data digits --epochs 6 --seeds 0,1,2

Three tables (Markdown, on stdout; raw numbers in --json):
1. Slimmable network with switchable BN trained once vs. each width trained alone (same epochs).
2. A universally slimmable network at unseen random per-layer configurations: test accuracy
   with BN calibration, without (training's running statistics), and the uniform widths around
   its FLOPs.
3. AutoSlim on that supernet at a FLOPs target vs. the uniform-width network of the same FLOPs:
   accuracy inherited from the supernet (BN calibrated) and after the same from-scratch training.

`--json` writes {"seeds": [...], "calls": [the call that wrote it]}.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import eval_context, this_call, write_results
from pruning.data import calibration_batches, load_dataset
from pruning.export import architecture, build_from_arch
from pruning.measure import count_flops
from pruning.models import build_model
from pruning.slimmable import (
    SlimTrainConfig,
    evaluate_config,
    make_slimmable,
    save_supernet,
    train_slimmable,
)
from pruning.train import TrainConfig, evaluate, train
from search.evaluators import make_evaluator
from search.runner import run_search
from search.space import SearchSpace
from search.strategies.autoslim import AutoSlimStrategy


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fresh(model: torch.nn.Module, zoo: str, args: dict, seed: int) -> torch.nn.Module:
    """A freshly initialised network with the same layer shapes as `model`."""
    torch.manual_seed(seed)
    return build_from_arch(architecture(model, zoo, args))


def uniform_width_for(net, shape, budget: float) -> float:
    """The largest uniform width (step 0.005) whose network fits `budget` FLOPs."""
    best = net.min_width
    for i in range(int(net.min_width * 200), 201):
        w = i / 200
        if count_flops(net.export(w), shape) <= budget:
            best = w
    return best


def run_seed(a: argparse.Namespace, seed: int, widths: list[float]) -> dict[str, Any]:
    data = load_dataset(a.data, input_size=a.input_size, seed=0, subset=a.subset)
    shape = (data.in_channels, data.input_size, data.input_size)
    zargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}
    calib = calibration_batches(data.train, 8, 64, seed)
    tcfg = TrainConfig(epochs=a.epochs, lr=a.lr, seed=seed)
    out: dict[str, Any] = {"seed": seed}
    if a.only_autoslim:
        out.update(slimmable={}, alone={})
    else:
        log(f"seed {seed}: switchable-BN slimmable {a.model}")
        torch.manual_seed(seed)
        net = make_slimmable(build_model(a.model, **zargs), shape, widths, zoo=a.model, zoo_args=zargs)
        train_slimmable(net, data.train, SlimTrainConfig(epochs=a.epochs, lr=a.lr, seed=seed), device="cpu")
        out["slimmable"] = {str(w): evaluate_config(net, data.test, w) for w in widths}
        out["alone"] = {}
        for w in widths:
            log(f"seed {seed}: width {w} alone")
            torch.manual_seed(seed)
            m = build_model(a.model, width=w, **zargs)
            train(m, data.train, tcfg, device="cpu")
            out["alone"][str(w)] = evaluate(m, data.test)

    log(f"seed {seed}: universally slimmable {a.model}")
    torch.manual_seed(seed)
    us = make_slimmable(build_model(a.model, **zargs), shape, widths, universal=True, zoo=a.model, zoo_args=zargs)
    train_slimmable(us, data.train, SlimTrainConfig(epochs=a.epochs, lr=a.lr, seed=seed), device="cpu")
    trained_stats = copy.deepcopy(us.state_dict())
    uniform = {
        str(w): {"flops": count_flops(us.export(w), shape), "acc": evaluate_config(us, data.test, w, calib)}
        for w in widths
    }
    out["us_uniform"] = uniform
    rng = random.Random(1000 + seed)
    out["us_random"] = []
    for _ in range(3):
        config = us.random_config(rng, per_layer=True)
        us.load_state_dict(trained_stats)
        uncal = evaluate_config(us, data.test, config)
        cal = evaluate_config(us, data.test, config, calib)
        flops = count_flops(us, shape)
        lower = max((w for w in widths if uniform[str(w)]["flops"] <= flops), default=widths[0])
        upper = min((w for w in widths if uniform[str(w)]["flops"] >= flops), default=widths[-1])
        out["us_random"].append(
            {
                "config": config,
                "flops": flops,
                "calibrated": cal,
                "uncalibrated": uncal,
                "lower": lower,
                "lower_acc": uniform[str(lower)]["acc"],
                "upper": upper,
                "upper_acc": uniform[str(upper)]["acc"],
            }
        )

    log(f"seed {seed}: AutoSlim at flops={a.target}")
    sn_dir = Path(a.work) / f"supernet_seed{seed}"
    save_supernet(us, sn_dir, calibration=calib)  # at the largest width, BN calibrated
    full = us.export()
    space = SearchSpace(full, shape, f"flops={a.target}", prune_stem=True)
    ctx = eval_context(full, data, space, calib[:4], seed, val_batches=a.val_batches)
    evaluator = make_evaluator("shared-weights", ctx, supernet=str(sn_dir))
    t0 = time.perf_counter()
    outcome = run_search(AutoSlimStrategy(space, seed=seed, supernet=str(sn_dir), step=a.step), evaluator)
    config = space.kept(outcome.best.policy)
    w_uni = uniform_width_for(us, shape, space.budget)
    uni_config = us.config_for_width(w_uni)
    res: dict[str, Any] = {
        "search_seconds": time.perf_counter() - t0,
        "candidates": len(outcome.results),
        "budget": space.budget,
        "flops_full": space.original["flops"],
    }
    for name, cfg in (("autoslim", config), ("uniform", uni_config)):
        inherited = evaluate_config(us, data.test, cfg, calib)
        plain = us.export(cfg)
        flops = count_flops(plain, shape)
        log(f"seed {seed}: {name} from scratch")
        scratch = fresh(plain, a.model, zargs, seed)
        train(scratch, data.train, tcfg, device="cpu")
        res[name] = {"config": cfg, "flops": flops, "inherited": inherited, "scratch": evaluate(scratch, data.test)}
    res["uniform"]["width"] = w_uni
    out["autoslim"] = res
    return out


def mean_std(xs: list[float]) -> str:
    m = statistics.mean(xs) * 100
    s = statistics.stdev(xs) * 100 if len(xs) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def tables(runs: list[dict[str, Any]], widths: list[float], a: argparse.Namespace) -> str:
    lines = [
        f"Model `{a.model}` on `{a.data}`, {a.epochs:g} epochs, seeds {a.seeds} (test accuracy %, mean ± std).",
        "",
    ]
    lines += ["| width | slimmable (switchable BN, trained once) | trained alone | difference |", "|---|---|---|---|"]
    for w in widths if not a.only_autoslim else []:
        s = [r["slimmable"][str(w)] for r in runs]
        al = [r["alone"][str(w)] for r in runs]
        lines.append(
            f"| {w:g} | {mean_std(s)} | {mean_std(al)} | {100 * (statistics.mean(s) - statistics.mean(al)):+.2f} |"
        )
    lines += [
        "",
        "| universally slimmable, config | MFLOPs | BN calibrated | not calibrated | uniform neighbours (calibrated) |",
        "|---|---|---|---|---|",
    ]
    for w in widths:
        u = [r["us_uniform"][str(w)] for r in runs]
        lines.append(f"| uniform {w:g} | {u[0]['flops'] / 1e6:.2f} | {mean_std([x['acc'] for x in u])} | | |")
    for r in runs:
        for i, x in enumerate(r["us_random"]):
            lines.append(
                f"| seed {r['seed']} random per-layer #{i + 1} | {x['flops'] / 1e6:.2f} "
                f"| {100 * x['calibrated']:.2f} | {100 * x['uncalibrated']:.2f} "
                f"| {x['lower']:g}: {100 * x['lower_acc']:.2f}, {x['upper']:g}: {100 * x['upper_acc']:.2f} |"
            )
    lines += [
        "",
        f"| network at flops<={a.target:g} | FLOPs (% of full) | inherited from supernet | trained from scratch |",
        "|---|---|---|---|",
    ]
    for name in ("autoslim", "uniform"):
        xs = [r["autoslim"][name] for r in runs]
        frac = statistics.mean(x["flops"] / r["autoslim"]["flops_full"] for x, r in zip(xs, runs, strict=True))
        label = "AutoSlim" if name == "autoslim" else "uniform width " + ", ".join(f"{x['width']:g}" for x in xs)
        lines.append(
            f"| {label} | {100 * frac:.2f} | {mean_std([x['inherited'] for x in xs])} | "
            f"{mean_std([x['scratch'] for x in xs])} |"
        )
    lines += [
        "",
        "AutoSlim configs (kept channels per group): "
        + "; ".join(f"seed {r['seed']}: {r['autoslim']['autoslim']['config']}" for r in runs),
        "AutoSlim search: "
        + ", ".join(
            f"{r['autoslim']['candidates']} candidates in {r['autoslim']['search_seconds']:.0f}s" for r in runs
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnet")
    p.add_argument("--data", default="digits")
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--subset", type=int, help="training images kept (fashion-mnist, cifar10)")
    p.add_argument("--only-autoslim", action="store_true", help="skip table 1 (switchable BN vs. alone)")
    p.add_argument("--widths", default="0.25,0.5,0.75,1.0")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--target", type=float, default=0.5, help="FLOPs ratio for AutoSlim")
    p.add_argument("--step", type=float, default=0.1, help="AutoSlim step (fraction of a group)")
    p.add_argument("--val-batches", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="/tmp/secateurs-bench-slimmable")
    p.add_argument("--json", help="write the raw numbers here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    widths = sorted(float(w) for w in a.widths.split(","))
    runs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        runs.append(run_seed(a, seed, widths))
        if a.json:
            write_results(a.json, {"seeds": runs}, [this_call("bench.slimmable", argv)])
    print(tables(runs, widths, a))


if __name__ == "__main__":
    main()
