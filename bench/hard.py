"""The hard setting (issue 15): deep and compact networks cut to 20% and 10% of their FLOPs (and
one latency target), where per-layer allocation matters. Run by hand; not part of the suite.

Every Secateurs row is a real job (`workers.pipeline.run_pipeline`, the code the service runs),
from the same trained base model; every peer row (bench/peers.py: Torch-Pruning global
magnitude, Torch-Pruning GroupNormPruner with its sparsity training, ModelOpt FastNAS) is cut
onto the same FLOPs budget and fine-tuned by the same routine (`pruning.train.finetune`) with the
same total epochs. Test accuracy, mean ± std over seeds.

    # the setting sized for the 2-core machine (Fashion-MNIST, 10,000 training images, 16 px)
    python -m bench.hard
    # the latency target (Secateurs rows only: the peers cut onto FLOPs)
    python -m bench.hard --targets latency=0.75 --runtime onnxruntime --peers
    # the full setting on a bigger machine or a GPU: all 55,000 images at 28 px, the base models
    # trained 30 epochs, every row fine-tuned 10 epochs
    python -m bench.hard --subset 0 --input-size 28 --train-epochs 30 --finetune-epochs 10 --device cuda
    # the AMC study's test: 16 random sub-nets, each evaluator's score against the accuracy after
    # the whole fine-tune (no rows; the fine-tune's own noise and the unpruned ceiling beside it)
    python -m bench.hard --models resnet56 --targets flops=0.2 flops=0.1 --seeds 0 --correlation 16
    # ModelOpt's row needs scripts/install-peers.sh, then PYTHONPATH=.peers
    PYTHONPATH=.:.peers python -m bench.hard --peers tp-global tp-groupnorm fastnas

Writes bench/results/hard-*.json (every row, the config, the load average, the base weights'
SHA-256 and `calls`: every call that wrote rows into it, `--resume` calls appended), a Markdown
table and a plot of accuracy against FLOPs kept (one line per method); `--draw A.json B.json`
draws several runs (one panel per model) into `--plot`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench import peers
from bench.common import (
    BASES,
    RESULTS,
    base_model,
    input_shape,
    markdown_table,
    model_args,
    previous_calls,
    spearman,
    this_call,
    write_results,
)
from pruning.bn import recalibrate_bn
from pruning.data import calibration_batches, dataset_size, load_dataset
from pruning.device import get_device
from pruning.export import load_weights
from pruning.measure import count_flops
from pruning.models import build_model
from pruning.train import FinetuneConfig, TrainConfig, evaluate, finetune, make_reproducible
from workers.pipeline import run_pipeline

# Distillation weight of the "+ KD" rows (the final fine-tune's loss: (1 - a) CE + a KL to the base model).
KD_ALPHA = 0.5
# Sensitivity's rates: three per group instead of the default nine (88 candidates on resnet56, not 262).
SENSITIVITY = {"name": "sensitivity", "options": {"rates": [0.25, 0.5, 0.75]}}
# Each Secateurs row: a label, the strategy (with options) and changes to the job's sections.
ROWS: dict[str, dict[str, Any]] = {
    "uniform": {"strategy": {"name": "uniform"}},
    "global": {"strategy": {"name": "global"}},
    "sensitivity": {"strategy": SENSITIVITY},
    "eagleeye": {"strategy": {"name": "eagleeye"}},
    "netadapt": {"strategy": {"name": "netadapt"}},
    "optuna": {"strategy": {"name": "optuna", "options": {"n_trials": 30}}},
    "eagleeye iterative": {"strategy": {"name": "eagleeye"}, "finetune": {"prune_schedule": "iterative"}},
    "eagleeye iterative + KD": {
        "strategy": {"name": "eagleeye"},
        "finetune": {"prune_schedule": "iterative", "kd_alpha": KD_ALPHA},
    },
    "eagleeye + ASHA": {"strategy": {"name": "eagleeye"}, "search": {"selection": "asha"}},
    "eagleeye + KD": {"strategy": {"name": "eagleeye"}, "finetune": {"kd_alpha": KD_ALPHA}},
    "eagleeye + ASHA + KD": {
        "strategy": {"name": "eagleeye"},
        "search": {"selection": "asha"},
        "finetune": {"kd_alpha": KD_ALPHA},
    },
    "sensitivity iterative": {
        "strategy": SENSITIVITY,
        "finetune": {"prune_schedule": "iterative"},
    },
    "sensitivity iterative + KD": {
        "strategy": SENSITIVITY,
        "finetune": {"prune_schedule": "iterative", "kd_alpha": KD_ALPHA},
    },
}
# Residual streams kept whole (`space.streams: whole`; on resnet56 its two searchable streams,
# layer2.0.conv2 and layer3.0.conv2: stage 1's is the stem's, kept whole anyway), so the cut falls on
# the blocks' inner widths, the allocation FastNAS finds there; or cut last (`streams: last`: whole
# when the inner widths alone can meet the target).
RESNET56_STREAMS = ["layer2.0.conv2", "layer3.0.conv2"]
# ... "inner to 5%": the inner widths allowed down to 5% (the default max_rate 0.9 cannot reach the
# 90% cut with the streams whole)
STREAM_SPACES: dict[str, dict[str, Any]] = {
    f"streams {mode}{inner}": {"streams": mode, **extra}
    for mode in ("whole", "last")
    for inner, extra in (("", {}), (", inner to 5%", {"max_rate": 0.95}))
}
for _label, _space in STREAM_SPACES.items():
    for _strategy in ("uniform", "eagleeye"):
        ROWS[f"{_strategy}, {_label}"] = {"strategy": {"name": _strategy}, "space": _space}
ROWS["eagleeye + ASHA, streams last, inner to 5%"] = {
    "strategy": {"name": "eagleeye"},
    "search": {"selection": "asha"},
    "space": STREAM_SPACES["streams last, inner to 5%"],
}
# FastNAS's allocation of resnet56 at 20% FLOPs (bench/allocation.py) run through our cut (L1) and
# fine-tune: every group pinned at the rate FastNAS's cut keeps, but layer1.0.conv1, which uniform
# sizes to the budget (the pins alone keep 19.8%). Tells FastNAS's allocation from the rest of it.
ALLOCATION = RESULTS / "allocation-resnet56-fashion-mnist-16px-flops20.json"
if ALLOCATION.exists():
    _fastnas = json.loads(ALLOCATION.read_text())["fastnas layers"]
    _pins = {
        name: 1 - kept / channels
        for name, (kept, channels) in _fastnas.items()
        if name.startswith("layer")
        and (name.endswith("conv1") or name in RESNET56_STREAMS)
        and name != "layer1.0.conv1"
    }
    ROWS["uniform, FastNAS's widths"] = {"strategy": {"name": "uniform"}, "space": {"pinned": _pins}}
# "+kd": the peer's cut, fine-tuned with the same distillation as the "+ KD" rows (to tell what the
# distillation buys from what the allocation buys).
PEERS = ("tp-global", "tp-groupnorm", "fastnas", "tp-global+kd")


def setting_base(args: argparse.Namespace, model_name: str, data: Any, device: torch.device) -> tuple[Path, str, float]:
    """The trained base model's weights, their SHA-256 and its test accuracy. The committed tables
    keep the base they were made from (`bench.common.BASES`: an earlier base drew its initial
    weights before seeding, so training again gave another model, and training differs across
    thread counts); a base not committed there is trained, seeded, and cached in --out."""
    name = f"base-{model_name}-{args.data}-{data.input_size}px-{args.subset}-{args.train_epochs:g}ep.safetensors"
    facts = {"name": args.data, "input_size": data.input_size, "subset": args.subset or None, "split_seed": 0}
    config = TrainConfig(epochs=args.train_epochs, lr=0.05, seed=0)
    committed = BASES / name
    base = base_model(model_name, data, config, facts, args.out, device, committed if committed.exists() else None)
    return base.path, base.sha256, evaluate(base.model, data.test)


def job_config(
    args: argparse.Namespace, model_name: str, weights: Path, target: str, seed: int, label: str
) -> dict[str, Any]:
    """The job config of a Secateurs row: its strategy and sections over the setting's data,
    base model and fixed-length fine-tune."""
    spec = copy.deepcopy(ROWS[label])
    finetune_spec = {"epochs": args.finetune_epochs, "lr": args.finetune_lr, **spec.pop("finetune", {})}
    return {
        "model": {"zoo": model_name, "weights": str(weights)},
        "data": {"name": args.data, "input_size": args.input_size, "subset": args.subset or None},
        "target": target,
        "finetune": finetune_spec,
        "search": {"val_batches": args.val_batches, **spec.pop("search", {})},
        "seed": seed,
        "runtime": args.runtime,
        "onnx": bool(args.quantize),
        **({"quantize": {"mode": "int8"}} if args.quantize else {}),
        **spec,
    }


def job_row(
    args: argparse.Namespace, model_name: str, weights: Path, target: str, seed: int, label: str, out: Path
) -> dict[str, Any]:
    """One Secateurs row: the job as the service would run it, fixed-length fine-tune."""
    config = job_config(args, model_name, weights, target, seed, label)
    t0 = time.perf_counter()
    summary = run_pipeline(config, out, device=args.device)
    row = {
        "accuracy": summary["accuracy_after"],
        "flops_fraction": summary["flops_after"] / summary["flops_before"],
        "search_score": summary["search_score"],
        "candidates": summary["candidates"],
        "seconds": time.perf_counter() - t0,
    }
    if summary.get("latency_ms_predicted") is not None:
        row["latency_ms_predicted"] = summary["latency_ms_predicted"]
    if args.quantize:  # the INT8 stage's record; its latencies were taken beside the other work
        q = summary["quantize"]
        keep = ("accuracy_fp32", "accuracy_int8", "drop_points", "calibration", "latency_ms_fp32", "latency_ms_int8")
        row["int8"] = {k: q[k] for k in keep} | {"work": str(out)}
    return row


def correlation(
    args: argparse.Namespace, model_name: str, weights: Path, target: str, seed: int, out: Path
) -> dict[str, Any]:
    """The AMC study's test, in this setting: `--correlation N` random sub-nets on the target
    (EagleEye's sampler, in the job's own search space), each scored by every evaluator the rows
    select with (plain validation, adaptive BN, EagleEye's 100-step fine-tune) and then given the
    rows' whole fine-tune; Spearman rho of each score with the test accuracy it ends at. Also the
    spread of those accuracies (how much allocation can buy at all), the fine-tune's own noise
    (the first sub-net again with `--correlation-repeats` other seeds) and the unpruned network
    after the same fine-tune (the ceiling)."""
    from search.evaluators import make_evaluator
    from search.strategies.eagleeye import EagleEyeStrategy
    from workers.config import JobConfig
    from workers.pipeline import build_search, finetune_model, finetune_policy, finetune_settings, prepare
    from workers.sink import JobSink

    cfg = JobConfig.model_validate(job_config(args, model_name, weights, target, seed, "eagleeye"))
    make_reproducible(seed)
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg, out, JobSink(), False, get_device(args.device))
    sampler, adaptive = build_search(cfg, prep, None)
    assert isinstance(sampler, EagleEyeStrategy)
    plain = make_evaluator("plain", adaptive.context)
    short = make_evaluator("finetune", adaptive.context, steps=sampler.finetune_steps, lr=sampler.finetune_lr)
    settings = finetune_settings(cfg.finetune, seed)
    t0 = time.perf_counter()
    samples: list[dict[str, Any]] = []
    for i in range(args.correlation):
        policy = sampler.random_policy()
        scores = {ev.name: ev.evaluate(policy).score for ev in (plain, adaptive, short)}
        tuned = finetune_policy(prep.model, prep.space, policy, prep.data, prep.calibration, settings, prep.device)
        samples.append(
            {"policy": policy, **scores, "test": tuned.accuracy_after, "fraction": prep.space.fraction(policy)}
        )
        print(json.dumps({"sample": i, **{k: v for k, v in samples[-1].items() if k != "policy"}}), file=sys.stderr)
    noise = [samples[0]["test"]]
    for k in range(1, args.correlation_repeats + 1):
        again = replace(settings, seed=seed + 1000 * k)
        tuned = finetune_policy(
            prep.model, prep.space, samples[0]["policy"], prep.data, prep.calibration, again, prep.device
        )
        noise.append(tuned.accuracy_after)
    ceiling = finetune_model(copy.deepcopy(prep.model), None, prep.data, settings, prep.device).accuracy_after
    tests = [r["test"] for r in samples]
    top3 = sorted(samples, key=lambda r: -r["adaptive-bn"])[:3]  # EagleEye's pick among these samples
    return {
        "model": model_name,
        "target": target,
        "seed": seed,
        "samples": samples,
        "rho": {ev: spearman([r[ev] for r in samples], tests) for ev in ("plain", "adaptive-bn", "finetune")},
        "test_min": min(tests),
        "test_median": statistics.median(tests),
        "test_max": max(tests),
        "test_std": statistics.stdev(tests),
        "eagleeye_pick_test": max(top3, key=lambda r: r["finetune"])["test"],
        "finetune_pick_test": max(samples, key=lambda r: r["finetune"])["test"],
        "finetune_noise": noise,
        "finetune_noise_std": statistics.stdev(noise) if len(noise) > 1 else 0.0,
        "unpruned_finetuned": ceiling,
        "base_test": prep.accuracy_before,
        "seconds": time.perf_counter() - t0,
    }


def peer_row(
    args: argparse.Namespace, model_name: str, weights: Path, data: Any, ratio: float, seed: int, name: str
) -> dict[str, Any]:
    """One peer row: cut by the peer onto the FLOPs budget, then the same fine-tune as a job's."""
    device = get_device(args.device)
    shape = input_shape(data)
    model = build_model(model_name, **model_args(data)).to(device)
    load_weights(model, weights)
    model.eval()
    torch.manual_seed(seed)
    budget = ratio * count_flops(model, shape)
    steps_per_epoch = -(-dataset_size(data.train) // 64)
    epochs = args.finetune_epochs
    t0 = time.perf_counter()
    teacher = None
    if name.endswith("+kd"):
        name, teacher = name.removesuffix("+kd"), copy.deepcopy(model).eval()
    if name == "tp-global":
        cut = peers.torch_pruning_global(model, shape, budget, 0.9)
    elif name == "tp-groupnorm":
        # its sparsity training takes a third of the fine-tune budget; the rest fine-tunes the cut
        sparse_epochs = epochs / 3
        cut = peers.torch_pruning_group_norm(
            model, data, shape, budget, 0.9, sparsity_steps=round(sparse_epochs * steps_per_epoch), seed=seed
        )
        epochs -= sparse_epochs
    elif name == "fastnas":
        cut = peers.modelopt_fastnas(model, data, shape, ratio)
    else:
        raise ValueError(f"unknown peer {name!r}")
    cut = cut.to(device)
    recalibrate_bn(cut, calibration_batches(data.train, 4, 64, seed=seed))
    kd = KD_ALPHA if teacher is not None else 0.0
    cfg = replace(FinetuneConfig(), epochs=epochs, lr=args.finetune_lr, seed=seed, kd_alpha=kd)
    finetune(cut, data, cfg, teacher=teacher, device=device)
    return {
        "accuracy": evaluate(cut, data.test),
        "flops_fraction": count_flops(cut, shape) / count_flops(model, shape),
        "search_score": None,
        "candidates": None,
        "seconds": time.perf_counter() - t0,
    }


def render(rows: list[dict[str, Any]], bases: dict[str, float], args: argparse.Namespace) -> str:
    """Markdown: one line per model, target and method; accuracy mean ± std over seeds."""
    head = (
        f"{args.data}, {args.subset or 'all'} training images at {args.input_size} px; base models trained "
        f"{args.train_epochs:g} epochs; every method fine-tuned {args.finetune_epochs:g} epochs in total "
        f"(lr {args.finetune_lr}); seeds {args.seeds}. Base test accuracy: "
        + ", ".join(f"{k} {v:.4f}" for k, v in bases.items())
    )
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["target"], r["method"]), []).append(r)
    lines = []
    for (model, target, method), rs in groups.items():
        accs = [r["accuracy"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(
            [
                model,
                target,
                method,
                f"{statistics.mean(accs):.4f} ± {std:.4f}",
                ", ".join(f"{a:.4f}" for a in accs),
                f"{statistics.mean(r['flops_fraction'] for r in rs):.3f}",
                f"{statistics.mean(r['seconds'] for r in rs):.0f}",
            ]
        )
    header = ["model", "target", "method", "test accuracy (mean ± std)", "per seed", "FLOPs kept", "seconds"]
    return f"{head}\n\n{markdown_table(header, lines)}\n"


def draw(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against FLOPs kept, one line per method, one panel per model (FLOPs targets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    palette = plt.get_cmap("tab20").colors  # 20 colours: the rows and peers together are 15
    colour = {m: palette[i % len(palette)] for i, m in enumerate(methods)}  # one per method in every panel
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for method in methods:
            pts: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                if r["model"] == model and r["method"] == method and r["target"].startswith("flops"):
                    pts.setdefault(r["target"], []).append(r)
            if not pts:
                continue
            xs = [statistics.mean(r["flops_fraction"] for r in rs) for rs in pts.values()]
            ys = [statistics.mean(r["accuracy"] for r in rs) for rs in pts.values()]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            peer = method in PEERS
            ax.plot(
                [xs[i] for i in order],
                [ys[i] for i in order],
                marker="s" if peer else "o",
                linestyle="--" if peer else "-",
                color=colour[method],
                label=method,
            )
        ax.set_title(model)
        ax.set_xlabel("FLOPs kept")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=10000, help="training images (0: all)")
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=["resnet56", "mobilenetv2"])
    # a latency target at 16 px needs --runtime onnxruntime: in eager PyTorch the smallest network
    # the bounds allow still takes 93% of resnet56's batch-1 latency (ONNX Runtime: 59%)
    ap.add_argument("--targets", nargs="+", default=["flops=0.2", "flops=0.1"])
    ap.add_argument("--runtime", default="eager", help="the jobs' runtime (latency tables and reports)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--peers", nargs="*", default=["tp-global", "tp-groupnorm"], choices=PEERS)
    ap.add_argument("--train-epochs", type=float, default=10)
    ap.add_argument("--finetune-epochs", type=float, default=3)
    ap.add_argument("--finetune-lr", type=float, default=0.05)
    ap.add_argument("--val-batches", type=int, default=4, help="validation batches of 256 per search candidate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--quantize",
        action="store_true",
        help="every Secateurs row also quantized to INT8 (`quantize: {mode: int8}`; bench/int8_accuracy.py reads them)",
    )
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --results, run the rest")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/bench-hard")
    ap.add_argument("--results", default=None, help="JSON (default bench/results/hard-DATA-SIZEpx.json)")
    ap.add_argument(
        "--draw",
        nargs="+",
        default=None,
        help="only draw these results JSONs into one plot (--plot) and print their table",
    )
    ap.add_argument(
        "--correlation",
        type=int,
        default=0,
        metavar="N",
        help="instead of the rows: N random sub-nets a model, target and seed, the evaluators' scores "
        "against the test accuracy after the whole fine-tune (written to --results)",
    )
    ap.add_argument("--correlation-repeats", type=int, default=2, help="fine-tune noise: the first sub-net again")
    ap.add_argument("--plot", default=str(RESULTS / "hard-fashion-mnist-16px.png"))
    args = ap.parse_args(argv)
    if args.draw:  # several runs (e.g. seeds run side by side) into one plot and one table
        runs = [json.loads(Path(f).read_text()) for f in args.draw]
        rows = sorted((r for run in runs for r in run["rows"]), key=lambda r: r["seed"])
        draw(rows, Path(args.plot))
        header = argparse.Namespace(**{**runs[0]["config"], "seeds": sorted({r["seed"] for r in rows})})
        print(render(rows, {k: v for run in runs for k, v in run["bases"].items()}, header))
        return 0
    make_reproducible(0, args.threads)  # deterministic kernels, the thread count the rows are made with
    device = get_device(args.device)
    data = load_dataset(args.data, input_size=args.input_size, subset=args.subset or None, seed=0)
    results = Path(args.results or RESULTS / f"hard-{args.data}-{args.input_size}px.json")
    rows: list[dict[str, Any]] = []
    calls = [this_call("bench.hard", argv)]
    if args.resume and results.exists():  # keep the rows (and the calls) of the runs that wrote them
        rows = json.loads(results.read_text())["rows"]
        calls = previous_calls(results) + calls
    done = {(r["model"], r["target"], r["seed"], r["method"]) for r in rows}
    bases: dict[str, float] = {}
    base_files: dict[str, dict[str, str]] = {}
    load = os.getloadavg()[0]

    def save(**extra: Any) -> None:
        """Write every row so far (a stopped run keeps them; --resume runs the rest)."""
        record = {"config": vars(args), "load_average": load, "bases": bases, "base_files": base_files, "rows": rows}
        write_results(results, {**record, **extra}, calls)

    for model_name in args.models:
        weights, digest, bases[model_name] = setting_base(args, model_name, data, device)
        base_files[model_name] = {"path": str(weights), "sha256": digest}
        for target in args.targets:
            for seed in args.seeds:
                if args.correlation:
                    out = Path(args.out) / model_name / target / f"seed{seed}" / "correlation"
                    rows.append(correlation(args, model_name, weights, target, seed, out))
                    save()
                    continue
                key = {"model": model_name, "target": target, "seed": seed}
                for label in args.rows:
                    if (model_name, target, seed, label) in done:
                        continue
                    out = Path(args.out) / model_name / target / f"seed{seed}" / label.replace(" ", "_")
                    rows.append(
                        {**key, "method": label, **job_row(args, model_name, weights, target, seed, label, out)}
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    save()
                if not target.startswith("flops="):
                    continue  # the peers cut onto FLOPs budgets only
                for name in args.peers or []:
                    if (model_name, target, seed, name) in done:
                        continue
                    ratio = float(target.split("=", 1)[1])
                    rows.append({**key, "method": name, **peer_row(args, model_name, weights, data, ratio, seed, name)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    save()
    if args.correlation:
        print(json.dumps([{k: v for k, v in r.items() if k != "samples"} for r in rows], indent=1))
        return 0
    table = render(rows, bases, args)
    save(table=table)
    draw(rows, results.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
