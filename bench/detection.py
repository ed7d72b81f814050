"""Benchmark of pruning a detector (run by hand; not part of the test suite).

The built-in box scenes are written as a YOLO archive and as a COCO archive (the same scenes)
and unpacked and checked by the upload's own code (`service.archive.unpack_dataset`, what
POST /v1/datasets runs). Per seed, the zoo's YOLO-style detector (`yolo_nano`) is trained on
the YOLO set and exported to a `.pt2` program, as a team would bring its own. For each FLOPs
target a detection job runs on the program (`workers.pipeline.run_pipeline`, the code a service
job runs: EagleEye's search (its default options) scored by validation mAP@[.5:.95], then the
default fine-tune, distilled from the unpruned detector, until validation mAP stops improving) with the
YOLO set; at the first target also with the COCO set, and with the training images alone
(`labels: false`: no box is read, the search and fine-tune score against the unpruned
detector's own detections; its returned network is then scored on the labelled test split like
the others). Torch-Pruning's global magnitude pruning (`bench.peers.torch_pruning_global`, its
ratio bisected onto the same FLOPs, after the rewrite of C2f blocks its YOLOv8 example makes,
and with the Detect head left whole, as that example leaves it) cuts the same trained
detector, followed by the same fine-tune
(`workers.pipeline.finetune_model`, same settings, same validation-based stopping).

Every choice made during a run reads the validation split only; test mAP is reported once per
row. The jobs report ONNX Runtime batch-1 latency before and after (`runtime: onnxruntime`).

    python -m bench.detection                                   # 50% and 30% of FLOPs, 3 seeds
    python -m bench.detection --targets 0.5 --seeds 0 --quick  # a check that it runs
    python -m bench.detection --table                          # the tables of the results file
    python -m bench.detection --latency-sizes 64 320 --work DIR  # the returned detectors' latency at other sizes

Writes --out/detection-boxscenes.json via `bench.common.write_results` (rows, settings and the
calls that wrote them) after every row (`--resume` runs the rest with the same settings), and
prints the tables (mean ± std over seeds, and per seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import add_job_run_arguments, markdown_table, resumed, run_settings, this_call, write_results
from bench.peers import split_c2f, torch_pruning_global, torch_pruning_global_cut
from pruning.bn import recalibrate_bn
from pruning.data import DataSplits, calibration_batches, load_dataset
from pruning.detection.scenes import BOX_CLASSES, write_coco_archive, write_yolo_archive
from pruning.export import export_program, load_weights
from pruning.intake import intake_program
from pruning.measure import count_flops
from pruning.models import build_model
from pruning.runtime import prepare, time_interleaved
from pruning.tasks import make_task, task_class
from pruning.train import evaluate_score
from search.base import SearchError
from workers.config import JobConfig
from workers.pipeline import BASE_WEIGHTS, finetune_model, finetune_settings, run_pipeline
from workers.sink import FileSink

MAX_RATE = 0.9  # Torch-Pruning's per-layer cap, as in bench.strategies and bench.segmentation
MODEL = "yolo_nano"
METHODS = ("secateurs-yolo", "secateurs-coco", "secateurs-label-free", "torch-pruning-global")
"""The rows of a seed (COCO and label-free at the first target only)."""
RESULTS_FILE = "detection-boxscenes.json"
CURVE_FILE = "detection-tp-curve.json"
LATENCY_FILE = "detection-latency.json"
ROW_SELECTION = ("methods", "seeds", "targets", "work", "tp_curve", "latency_sizes")
"""Flags that choose which rows a run adds (or where it works), left out of the settings a
resumed run must match; each call's own flags are in the file's `calls`."""
CURVE_SETTINGS = ("seeds", "width", "size", "train_epochs", "lr", "warmup_epochs")
"""What `--tp-curve` depends on: the trained detectors' settings."""


def unpacked(work: Path, splits: dict[str, int], size: int) -> dict[str, Path]:
    """The scenes as a YOLO and a COCO archive, each unpacked and checked as an upload is (the
    folders' roots), and the YOLO set's training and validation images alone in one folder
    (`images`: what a team without labels would upload; the test images are left out, so the
    label-free job never sees the images every row is tested on)."""
    from service.archive import Limits, unpack_dataset

    kept = work / "roots.json"
    if kept.exists():  # a --work folder of an earlier run of the same settings
        return {k: Path(v) for k, v in json.loads(kept.read_text()).items()}
    limits = Limits(max_bytes=2_000_000_000, max_files=200_000, max_image_pixels=4096 * 4096)
    roots = {}
    for fmt, writer in (("yolo", write_yolo_archive), ("coco", write_coco_archive)):
        archive = writer(work / f"{fmt}.tar.gz", splits, size=size)
        roots[fmt] = unpack_dataset(archive, ".tar.gz", work / f"unpacked-{fmt}", limits).root
    images = work / "images"
    images.mkdir()
    for split in ("train", "val"):
        for png in sorted((roots["yolo"] / "images" / split).glob("*.png")):
            shutil.copy(png, images / f"{split}-{png.name}")
    roots["images"] = images
    kept.write_text(json.dumps({k: str(v) for k, v in roots.items()}))
    return roots


def base_job(args: argparse.Namespace, seed: int, root: Path) -> dict[str, Any]:
    """The job that trains the zoo detector on the YOLO set (and nothing more: one candidate,
    no fine-tune), whose trained weights every row of the seed starts from."""
    return {
        "model": {"zoo": MODEL, "args": {"width": args.width}},
        "data": {"name": "boxfolder", "path": str(root), "input_size": args.size},
        "task": "detection",
        "target": {"flops": 0.5},
        "strategy": {"name": "uniform"},
        "train": {"epochs": args.train_epochs, "batch_size": 32, "lr": args.lr, "warmup_epochs": args.warmup_epochs},
        "finetune": {"max_steps": 0},
        "search": {"max_candidates": 1},
        "seed": seed,
        "onnx": False,
    }


def prune_job(
    args: argparse.Namespace, program: Path, data: dict[str, Any], target: float, seed: int, labels: bool = True
) -> JobConfig:
    """A detection job on the trained detector's program: --strategy with its default options and
    the default fine-tune (the budget bounded by --finetune-steps, the search by --candidates)."""
    return JobConfig.model_validate(
        {
            "model": {"program": str(program)},
            "data": {**data, "input_size": args.size},
            "task": "detection",
            **({} if labels else {"task_options": {"labels": False}}),
            "target": {"flops": target},
            "strategy": {"name": args.strategy},
            "finetune": {"max_steps": args.finetune_steps}
            | ({"epochs": args.finetune_epochs} if args.finetune_epochs else {}),
            "search": {"max_candidates": args.candidates},
            "runtime": "onnxruntime",
            "seed": seed,
            "onnx": False,
        }
    )


def detect_head(model: torch.nn.Module, _: torch.Tensor) -> list[torch.nn.Module]:
    """What Torch-Pruning's YOLOv8 example leaves unpruned: the Detect module, all of it (its
    per-level box and class towers and the DFL)."""
    return [model.detect]


def test_scores(model: torch.nn.Module, data: DataSplits) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@0.5) of `model` on the labelled test split."""
    task = make_task("detection", num_classes=data.num_classes)
    score = evaluate_score(model.eval(), data.test, batch_size=64, device="cpu", task=task)
    return score.value, score.extras["map50"]


def row(method: str, target: float, seed: int, base: tuple[float, float], started: float, **fields: Any) -> dict:
    """One results row: the method, the setting, the unpruned detector's test mAP, `fields`."""
    return {
        "method": method,
        "model": MODEL,
        "target": target,
        "seed": seed,
        "map_before": base[0],
        "map50_before": base[1],
        **fields,
        "seconds": time.perf_counter() - started,
    }


def job_row(
    method: str, cfg: JobConfig, out: Path, seed: int, base: tuple[float, float], test: DataSplits
) -> dict[str, Any]:
    """Run one job and give its row: test mAP of the returned program on the labelled split."""
    started = time.perf_counter()
    summary = run_pipeline(cfg, out, device="cpu", cache_dir=out.parent / "cache")
    returned = intake_program(out / "model.pt2").module  # the returned program, checked equal to it
    after = test_scores(returned, test)
    return row(
        method,
        cfg.target_spec.value,
        seed,
        base,
        started,
        map_after=after[0],
        map50_after=after[1],
        job_score_after=summary["accuracy_after"],  # the job's own test score (vs the teacher when label-free)
        val_score_after=summary["val_accuracy_after"],
        flops_ratio=summary["flops_after"] / summary["flops_before"],
        latency_ms_before=summary["latency_ms_before"],
        latency_ms_after=summary["latency_ms_after"],
        finetune_steps=summary["finetune_steps"],
        candidates=summary.get("candidates"),
    )


def run_seed(
    args: argparse.Namespace, seed: int, roots: dict[str, Path], work: Path, done: set, keep: Callable[[dict], None]
) -> None:
    """Train the seed's detector (unless a --work folder holds it, trained by an earlier run of
    the same settings), then every row of the seed not in `done`, each handed to `keep`."""
    out = work / f"seed{seed}"
    if not (out / "base" / BASE_WEIGHTS).exists():

        def shown(phase: str, fraction: float, label: str | None) -> None:  # a long training, watched
            if label:
                print(f"seed {seed} {phase} {fraction:.0%}: {label}", flush=True)

        sink = FileSink(out / "base", on_progress=shown)
        run_pipeline(base_job(args, seed, roots["yolo"]), out / "base", sink, device="cpu", cache_dir=work / "cache")
    data = load_dataset("boxfolder", input_size=args.size, seed=seed, path=roots["yolo"], augment=False)
    shape = (data.in_channels, args.size, args.size)
    net = build_model(MODEL, num_classes=data.num_classes, in_channels=data.in_channels, width=args.width)
    load_weights(net, out / "base" / BASE_WEIGHTS)
    net.eval()
    program = export_program(net, out / "detector.pt2", shape)
    base = test_scores(net, data)
    for target in args.targets:
        settings = [("secateurs-yolo", {"name": "boxfolder", "path": str(roots["yolo"])}, True)]
        if target == args.targets[0]:
            settings += [
                ("secateurs-coco", {"name": "boxfolder", "path": str(roots["coco"])}, True),
                ("secateurs-label-free", {"name": "imagefolder", "path": str(roots["images"])}, False),
            ]
        for method, spec, labels in settings:
            if (method, target, seed) not in done:
                cfg = prune_job(args, program, spec, target, seed, labels)
                keep(job_row(method, cfg, out / f"{method}-{target}", seed, base, data))
        if ("torch-pruning-global", target, seed) not in done:
            started = time.perf_counter()
            full = count_flops(net, shape)
            try:
                cut = torch_pruning_global(split_c2f(net, shape), shape, full * target, MAX_RATE, ignore=detect_head)
            except SearchError as exc:  # a row that says so, not a stopped run
                keep(row("torch-pruning-global", target, seed, base, started, map_after=None, failed=str(exc)))
                continue
            recalibrate_bn(cut, calibration_batches(data.train, seed=seed))
            task = make_task("detection", num_classes=data.num_classes, teacher=net)
            cfg = prune_job(args, program, {"name": "boxfolder", "path": str(roots["yolo"])}, target, seed)
            tuned = finetune_model(cut, net, data, finetune_settings(cfg.finetune, seed), "cpu", task=task)
            after = test_scores(tuned.model, data)
            keep(
                row(
                    "torch-pruning-global",
                    target,
                    seed,
                    base,
                    started,
                    map_after=after[0],
                    map50_after=after[1],
                    job_score_after=tuned.accuracy_after,
                    val_score_after=tuned.val_after,
                    flops_ratio=count_flops(cut, shape) / full,
                    latency_ms_before=None,
                    latency_ms_after=None,
                    finetune_steps=tuned.outcome.steps if tuned.outcome else 0,
                    candidates=None,
                )
            )


CURVE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99)
"""Torch-Pruning's global ratios at which `tp_curve` counts the FLOPs it keeps."""


def tp_curve(args: argparse.Namespace, work: Path) -> list[dict]:
    """The FLOPs Torch-Pruning's global pruning (as the rows run it) keeps at each of
    `CURVE_RATIOS`, on each seed's trained detector in --work: where its ratio can reach a
    target, and where the FLOPs stop falling with the ratio."""
    out = []
    for seed in args.seeds:
        weights = work / f"seed{seed}" / "base" / BASE_WEIGHTS
        if not weights.exists():
            continue
        shape = (3, args.size, args.size)
        net = build_model(MODEL, num_classes=len(BOX_CLASSES), in_channels=3, width=args.width)
        load_weights(net, weights)
        base = split_c2f(net.eval(), shape)
        full = count_flops(base, shape)
        for ratio in CURVE_RATIOS:
            m = torch_pruning_global_cut(base, shape, ratio, MAX_RATE, ignore=detect_head)
            out.append({"seed": seed, "ratio": ratio, "flops_kept": count_flops(m, shape) / full})
            print(f"seed {seed} ratio {ratio}: FLOPs kept {out[-1]['flops_kept']:.3f}", flush=True)
    return out


def shaped_like(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """`model` with every conv and batch norm remade in the shape `state` gives it (a cut of the
    same architecture saved under the same names: a program job's `model.safetensors`), and
    `state` loaded: the returned detector as an eager module, which runs at any input size
    (the program's anchors are fixed at the size it was exported at)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d):
            w = state[f"{name}.weight"]
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            groups = w.shape[0] if depthwise else m.groups
            shape = (w.shape[1] * groups, w.shape[0], m.kernel_size, m.stride, m.padding, m.dilation, groups)
            new: nn.Module = nn.Conv2d(*shape, bias=m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            new = nn.BatchNorm2d(state[f"{name}.running_mean"].shape[0], m.eps, m.momentum, m.affine)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    model.load_state_dict(state)
    return model.eval()


def returned_detector(args: argparse.Namespace, job: Path) -> nn.Module:
    """A program job's returned detector (`job`'s `model.safetensors`) as an eager zoo module,
    checked against the job's own `model.pt2` on a batch at the benchmark's size."""
    from safetensors.torch import load_file

    net = build_model(MODEL, num_classes=len(BOX_CLASSES), in_channels=3, width=args.width)
    cut = shaped_like(net, load_file(job / "model.safetensors"))
    x = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = torch.export.load(job / "model.pt2").module()(x), cut(x)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"{job}: the rebuilt detector does not give the program's outputs")
    return cut


def deployed_latency(args: argparse.Namespace, work: Path) -> list[dict]:
    """ONNX Runtime batch-1 latency (one thread) of each Secateurs row's returned detector in
    --work against the unpruned one, at each of `args.latency_sizes` px: per seed and size all
    of them timed in turn, one call at a time (median of 100), so that the machine's changes
    fall on all alike. The detector is fully convolutional: the same networks run at the size a
    team would deploy (the weights do not change the time)."""
    torch.set_num_threads(1)
    out = []
    for seed in args.seeds:
        folder = work / f"seed{seed}"
        if not (folder / "base" / BASE_WEIGHTS).exists():
            continue
        base = build_model(MODEL, num_classes=len(BOX_CLASSES), in_channels=3, width=args.width)
        load_weights(base, folder / "base" / BASE_WEIGHTS)
        jobs = sorted(d for d in folder.glob("secateurs-*") if (d / "model.pt2").exists())
        cuts = [returned_detector(args, job) for job in jobs]
        for size in args.latency_sizes:
            shape = (3, size, size)
            load = os.getloadavg()
            times = time_interleaved([prepare(m, shape, "onnxruntime") for m in (base, *cuts)], warmup=10, repeats=100)
            for job, cut, after in zip(jobs, cuts, times[1:], strict=True):
                method, _, target = job.name.rpartition("-")
                out.append(
                    {
                        "seed": seed,
                        "method": method,
                        "target": float(target),
                        "size": size,
                        "flops_ratio": count_flops(cut, shape) / count_flops(base, shape),
                        "latency_ms_before": times[0],
                        "latency_ms_after": after,
                        "ratio": after / times[0],
                        "load": [load, os.getloadavg()],
                    }
                )
                print(f"seed {seed} {job.name} {size} px: {times[0]:.2f} -> {after:.2f} ms", flush=True)
    return out


def table(rows: list[dict]) -> str:
    """Mean ± std (over seeds) of test mAP after, per target and method."""
    keys = sorted({(r["target"], r["method"]) for r in rows}, key=lambda k: (-k[0], k[1]))
    out = []
    for target, method in keys:
        picked = [r for r in rows if (r["target"], r["method"]) == (target, method) and r["map_after"] is not None]
        if not picked:
            out.append([f"{target:.0%}", method, "—", "target not reached", "—", "—", "—", "—", 0])
            continue

        def stat(field: str, picked: list[dict] = picked) -> str:
            values = [r[field] for r in picked]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.3f}{spread}"

        lat = [r["latency_ms_after"] / r["latency_ms_before"] for r in picked if r.get("latency_ms_before")]
        out.append(
            [
                f"{target:.0%}",
                method,
                stat("map_before"),
                stat("map_after"),
                stat("map50_before"),
                stat("map50_after"),
                f"{statistics.mean(r['flops_ratio'] for r in picked):.3f}",
                f"{statistics.mean(lat):.2f}" if lat else "—",
                len(picked),
            ]
        )
    header = [
        "FLOPs target",
        "method",
        "mAP before",
        "mAP after (± std)",
        "mAP@0.5 before",
        "mAP@0.5 after",
        "FLOPs kept",
        "ONNX Runtime latency ratio",
        "seeds",
    ]
    return markdown_table(header, out)


def per_seed_table(rows: list[dict]) -> str:
    """Test mAP@[.5:.95] per target and seed: the unpruned detector and each method."""
    methods = sorted({r["method"] for r in rows})
    cells = {(r["target"], r["seed"], r["method"]): r for r in rows}
    out = []
    for target, seed in sorted({(r["target"], r["seed"]) for r in rows}, key=lambda k: (-k[0], k[1])):
        first = next(r for r in rows if (r["target"], r["seed"]) == (target, seed))
        found = [cells.get((target, seed, m)) for m in methods]
        values = ["—" if c is None else "failed" if c["map_after"] is None else f"{c['map_after']:.3f}" for c in found]
        out.append([f"{target:.0%}", seed, f"{first['map_before']:.3f}", *values])
    return markdown_table(["FLOPs target", "seed", "unpruned", *methods], out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.3], help="FLOPs kept (ratios)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--strategy", default="eagleeye", help="the Secateurs strategy of the job rows")
    p.add_argument("--width", type=float, default=0.5, help="the detector's width multiplier")
    p.add_argument("--size", type=int, default=64, help="scene side in pixels (a multiple of 32)")
    p.add_argument("--train-epochs", type=float, default=100)
    p.add_argument("--lr", type=float, default=0.05, help="the base training's learning rate")
    p.add_argument(
        "--warmup-epochs", type=float, help="the base training's warm-up in epochs (default: the service's, 3)"
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="rows to run (default: all)")
    p.add_argument(
        "--finetune-epochs",
        type=float,
        help="fine-tune exactly this many epochs, cosine, no early stop (default: the service's, until "
        "validation mAP stops improving, at most --finetune-steps)",
    )
    p.add_argument(
        "--tp-curve",
        action="store_true",
        help=f"write the FLOPs Torch-Pruning's global pruning keeps at ratios {CURVE_RATIOS[0]}..{CURVE_RATIOS[-1]} "
        "on each seed's detector in --work (to --out/detection-tp-curve.json); run nothing else",
    )
    p.add_argument(
        "--latency-sizes",
        nargs="+",
        type=int,
        help="time each Secateurs row's detector in --work against the unpruned one at these sizes (px) in "
        "ONNX Runtime (to --out/detection-latency.json); run nothing else",
    )
    p.add_argument(
        "--work",
        type=Path,
        help="keep the archives and each seed's trained detector here (default: a temporary folder); "
        "a run resumed with the same folder reuses them",
    )
    add_job_run_arguments(p)
    args = p.parse_args(argv)
    path = args.out / RESULTS_FILE
    if args.table:
        saved = json.loads(path.read_text())["rows"]
        print(table(saved), per_seed_table(saved), sep="\n\n")
        return 0
    if args.tp_curve:
        if args.work is None:
            p.error("--tp-curve reads the trained detectors of a --work folder")
        curve = tp_curve(args, args.work)
        write_results(
            args.out / CURVE_FILE,
            {"rows": curve, "settings": {k: v for k, v in run_settings(args).items() if k in CURVE_SETTINGS}},
            [this_call("bench.detection", argv)],
        )
        return 0
    if args.latency_sizes:
        if args.work is None:
            p.error("--latency-sizes reads the detectors of a --work folder")
        latency = deployed_latency(args, args.work)
        write_results(args.out / LATENCY_FILE, {"rows": latency}, [this_call("bench.detection", argv)])
        return 0
    if args.quick:
        args.train_epochs, args.finetune_steps, args.candidates = 2, 10, 2
    if args.warmup_epochs is None:  # recorded as it ran: files written before warm-ups (none) do not resume
        args.warmup_epochs = task_class("detection").train_warmup_epochs
    torch.set_num_threads(args.threads)
    splits = {"train": 96, "val": 32, "test": 32} if args.quick else {"train": 800, "val": 200, "test": 200}
    # which rows to run and where, not how a row is measured (a row names its method, target and seed)
    settings = {k: v for k, v in run_settings(args).items() if k not in ROW_SELECTION}
    if args.finetune_epochs is None:  # the service's default: files written before the flag read the same
        del settings["finetune_epochs"]
    rows, calls = resumed(path, settings, splits, this_call("bench.detection", argv), args.resume)
    with contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="bench-det-") as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        roots = unpacked(work, splits, args.size)

        def keep(new: dict) -> None:  # written after every row, so an interrupted run keeps its rows
            rows.append(new)
            write_results(path, {"rows": rows, "settings": settings, "splits": splits}, calls)
            what = new.get("failed") or f"mAP {new['map_after']:.3f}"
            print(f"{new['method']} {new['target']} seed {new['seed']}: {what}", flush=True)

        left_out = {(m, t, seed) for m in METHODS if m not in args.methods for t in args.targets for seed in args.seeds}
        for seed in args.seeds:
            done = {(r["method"], r["target"], r["seed"]) for r in rows} | left_out
            if any((m, t, seed) not in done for t in args.targets for m in ("secateurs-yolo", "torch-pruning-global")):
                run_seed(args, seed, roots, work, done, keep)
    print(table(rows), per_seed_table(rows), sep="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
