"""Benchmark of pruning segmentation networks (run by hand; not part of the test suite).

The built-in scenes are written as a mask-folder archive and unpacked and checked by the
upload's own code (`service.archive.unpack_dataset`, what POST /v1/datasets runs); for each
network (`unet`, `deeplabv3`), FLOPs target (50% and 30% of the original by default) and seed,
a segmentation job runs through `workers.pipeline.run_pipeline` (the code a service job runs:
train the network, search with the given strategy, fine-tune until validation mIoU stops
improving), and Torch-Pruning's global magnitude pruning (`bench.peers.torch_pruning_global`,
its ratio bisected onto the same FLOPs) cuts the same trained network, followed by the same
fine-tune (`workers.pipeline.finetune_model`, same settings, same validation-based stopping).
Every choice made during a run (the search's candidate, the fine-tune's stopping point) reads
the validation split only; test mIoU is reported once per row.

    python -m bench.segmentation                                   # both networks, 50% and 30%, 3 seeds
    python -m bench.segmentation --models unet --targets 0.5 --seeds 0 --quick

Writes --out/segmentation-scenes.json via `bench.common.write_results` (rows, settings and the
calls that wrote them) after every row, so an interrupted run keeps what it did (`--resume`
runs the rest with the same settings), and prints a markdown table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import add_job_run_arguments, markdown_table, resumed, run_settings, this_call, write_results
from bench.peers import torch_pruning_global
from pruning.bn import recalibrate_bn
from pruning.data import calibration_batches, load_dataset
from pruning.export import load_weights
from pruning.measure import count_flops
from pruning.models import build_model
from pruning.segmentation.scenes import write_scenes_archive
from pruning.tasks import make_task
from workers.config import JobConfig
from workers.pipeline import BASE_WEIGHTS, finetune_model, finetune_settings, run_pipeline

MAX_RATE = 0.9  # Torch-Pruning's per-layer cap, as in bench.strategies


def scenes_folder(work: Path, splits: dict[str, int], size: int) -> Path:
    """The scenes archive, unpacked and checked as an upload is; the mask folder's root."""
    from service.archive import Limits, unpack_dataset

    archive = write_scenes_archive(work / "scenes.tar.gz", splits, size=size)
    limits = Limits(max_bytes=2_000_000_000, max_files=200_000, max_image_pixels=4096 * 4096)
    return unpack_dataset(archive, ".tar.gz", work / "unpacked", limits).root


def job_config(args: argparse.Namespace, model: str, target: float, seed: int, root: Path) -> JobConfig:
    """The segmentation job a row runs."""
    return JobConfig.model_validate(
        {
            "model": {"zoo": model, "args": {"width": args.width}},
            "data": {"name": "maskfolder", "path": str(root), "input_size": args.size},
            "task": "segmentation",
            "target": {"flops": target},
            "strategy": {"name": args.strategy},
            "train": {"epochs": args.train_epochs, "batch_size": 32, "lr": 0.05},
            "finetune": {"max_steps": args.finetune_steps},
            "search": {"max_candidates": args.candidates},
            "seed": seed,
            "onnx": False,
        }
    )


def run_row(args: argparse.Namespace, model: str, target: float, seed: int, root: Path, work: Path) -> list[dict]:
    """One job and its Torch-Pruning peer on the job's own trained network."""
    cfg = job_config(args, model, target, seed, root)
    out = work / f"{model}-{target}-{seed}"
    started = time.perf_counter()
    summary = run_pipeline(cfg, out, device="cpu", cache_dir=work / "cache")
    ours = {
        "method": f"secateurs-{args.strategy}",
        "model": model,
        "target": target,
        "seed": seed,
        "miou_before": summary["accuracy_before"],
        "miou_after": summary["accuracy_after"],
        "val_miou_after": summary["val_accuracy_after"],
        "pixel_accuracy_after": summary.get("score_extras", {}).get("pixel_accuracy"),
        "flops_ratio": summary["flops_after"] / summary["flops_before"],
        "seconds": time.perf_counter() - started,
    }
    data = load_dataset("maskfolder", input_size=args.size, seed=seed, path=root)
    shape = (data.in_channels, args.size, args.size)
    base = build_model(model, num_classes=data.num_classes, in_channels=data.in_channels, width=args.width)
    load_weights(base, out / BASE_WEIGHTS)
    base.eval()
    started = time.perf_counter()
    full = count_flops(base, shape)
    cut = torch_pruning_global(base, shape, full * target, MAX_RATE)
    recalibrate_bn(cut, calibration_batches(data.train, seed=seed))
    task = make_task("segmentation")
    tuned = finetune_model(cut, base, data, finetune_settings(cfg.finetune, seed), "cpu", task=task)
    peer = {
        "method": "torch-pruning-global",
        "model": model,
        "target": target,
        "seed": seed,
        "miou_before": summary["accuracy_before"],
        "miou_after": tuned.accuracy_after,
        "val_miou_after": tuned.val_after,
        "pixel_accuracy_after": tuned.extras_after.get("pixel_accuracy"),
        "flops_ratio": count_flops(cut, shape) / full,
        "seconds": time.perf_counter() - started,
    }
    return [ours, peer]


def table(rows: list[dict]) -> str:
    """Mean ± std (over seeds) of test mIoU after, per network, target and method."""
    keys = sorted({(r["model"], r["target"], r["method"]) for r in rows})
    out = []
    for model, target, method in keys:
        picked = [r for r in rows if (r["model"], r["target"], r["method"]) == (model, target, method)]
        after = [r["miou_after"] for r in picked]
        spread = f" ± {statistics.stdev(after):.3f}" if len(after) > 1 else ""
        out.append(
            [
                model,
                f"{target:.0%}",
                method,
                f"{statistics.mean(r['miou_before'] for r in picked):.3f}",
                f"{statistics.mean(after):.3f}{spread}",
                f"{statistics.mean(r['flops_ratio'] for r in picked):.3f}",
                len(picked),
            ]
        )
    header = ["network", "FLOPs target", "method", "mIoU before", "test mIoU after (± std)", "FLOPs kept", "seeds"]
    return markdown_table(header, out)


def per_seed_table(rows: list[dict]) -> str:
    """Test mIoU per network, target and seed: the unpruned network, each method after its
    fine-tune, and the job's lead over Torch-Pruning in points."""
    ours = {(r["model"], r["target"], r["seed"]): r for r in rows if r["method"].startswith("secateurs-")}
    peer = {(r["model"], r["target"], r["seed"]): r for r in rows if r["method"] == "torch-pruning-global"}
    out = []
    for key in sorted(ours.keys() & peer.keys(), key=lambda k: (k[0], -k[1], k[2])):
        a, b = ours[key], peer[key]
        lead = 100 * (a["miou_after"] - b["miou_after"])
        out.append(
            [
                key[0],
                f"{key[1]:.0%}",
                key[2],
                f"{a['miou_before']:.3f}",
                f"{a['miou_after']:.3f}",
                f"{b['miou_after']:.3f}",
                f"{lead:+.1f}",
            ]
        )
    header = ["network", "FLOPs target", "seed", "unpruned", "Secateurs", "Torch-Pruning global", "lead (points)"]
    return markdown_table(header, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.segmentation", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["unet", "deeplabv3"], choices=["unet", "deeplabv3"])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.3], help="FLOPs kept (ratios)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--strategy", default="eagleeye", help="the Secateurs strategy of the job rows")
    p.add_argument("--width", type=float, default=0.5, help="the networks' width multiplier")
    p.add_argument("--size", type=int, default=32, help="scene side in pixels")
    p.add_argument("--train-epochs", type=float, default=30)
    add_job_run_arguments(p)
    args = p.parse_args(argv)
    if args.table:
        saved = json.loads((args.out / "segmentation-scenes.json").read_text())["rows"]
        print(table(saved), per_seed_table(saved), sep="\n\n")
        return 0
    if args.quick:
        args.train_epochs, args.finetune_steps, args.candidates, args.width = 2, 20, 2, 0.25
    torch.set_num_threads(args.threads)
    splits = {"train": 160, "val": 48, "test": 48} if args.quick else {"train": 800, "val": 200, "test": 200}
    path = args.out / "segmentation-scenes.json"
    settings = run_settings(args)
    rows, calls = resumed(path, settings, splits, this_call("bench.segmentation", argv), args.resume)
    done = {(r["model"], r["target"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="bench-seg-") as tmp:
        work = Path(tmp)
        root = scenes_folder(work, splits, args.size)
        for model in args.models:
            for target in args.targets:
                for seed in args.seeds:
                    if (model, target, seed) in done:
                        continue
                    rows += run_row(args, model, target, seed, root, work)
                    # written after every row, so an interrupted run keeps its rows (--resume goes on)
                    write_results(path, {"rows": rows, "settings": settings, "splits": splits}, calls)
                    print(f"{model} {target} seed {seed}: done", flush=True)
    print(table(rows), per_seed_table(rows), sep="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
