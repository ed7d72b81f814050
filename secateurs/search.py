"""`secateurs search`: search per-layer pruning rates for a target, fine-tune the winner and
export it, locally (the same `workers.pipeline.run_pipeline` the service's Ray tasks run)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

from workers.config import JobConfig

from .common import CliError, emit_json, progress_bar
from .jobflags import add_job_flags, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `search` command: one flag per job field (secateurs.jobflags) plus how to run it."""
    from pruning.models import list_models
    from search.registry import list_strategies

    names = list_strategies()
    p = subparsers.add_parser(
        "search",
        help="search per-layer pruning rates for a target, fine-tune and export",
        description="Search per-layer pruning rates that meet a target, cut and fine-tune the winner, export it. "
        f"Strategies: {', '.join(names)}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="strategies:\n"
        + "\n".join(f"  {n}" for n in names)
        + "\n\nmodels (--model NAME; or --model FILE.pt2, a torch.export program; or --model package.module:factory):\n"
        + "\n".join(f"  {n}" for n in list_models())
        + "\n\nexample:\n  secateurs search --model resnet20 --data digits --target flops=0.5 "
        "--strategy eagleeye --out out/ --json",
    )
    add_job_flags(p)
    run_opts = p.add_argument_group("run", "where and how this machine runs the job")
    run_opts.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run_opts.add_argument("--resume", action="store_true", help="resume an interrupted search from OUT")
    run_opts.add_argument(
        "--cache-dir",
        default=os.environ.get("SECATEURS_CACHE_DIR"),
        help="keep trained base models here by a hash of model, data, training settings and seed, and reuse "
        "them (default: $SECATEURS_CACHE_DIR; unset: no cache)",
    )
    run_opts.add_argument("--out", required=True, help="output folder")
    run_opts.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> JobConfig:
    """The validated job config of the command-line flags (a bad value is a one-line CliError)."""
    from pydantic import ValidationError

    try:
        return JobConfig.model_validate(config_from_args(args))
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e.get("loc", ())) or "config"
        raise CliError(f"{where}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}") from None


def _print_summary(s: dict[str, Any]) -> None:
    lat = lambda v: "n/a" if v is None else f"{v:.3f} ms"  # noqa: E731
    print(
        f"strategy {s['strategy']} ({s['evaluator']}), target {s['target']}: "
        f"{s['candidates']} candidates in {s['search_seconds']:.1f}s"
    )
    print(
        f"  accuracy  {s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f} "
        f"(cut, before fine-tune {s['accuracy_pruned']:.4f})"
    )
    if s.get("base_training"):
        from workers.pipeline import describe_training

        print(f"  base      {describe_training(s['base_training'])}")
    print(f"  FLOPs     {s['flops_before']:,} -> {s['flops_after']:,} ({s['flops_after'] / s['flops_before']:.1%})")
    print(f"  params    {s['params_before']:,} -> {s['params_after']:,} ({s['params_after'] / s['params_before']:.1%})")
    print(f"  latency   {lat(s['latency_ms_before'])} -> {lat(s['latency_ms_after'])} (batch 1, {s['runtime']})")
    q = s.get("quantize")
    if q:
        print(
            f"  INT8      accuracy {q['accuracy_fp32']:.4f} -> {q['accuracy_int8']:.4f} "
            f"({q['calibration']} calibration), latency {lat(q['latency_ms_fp32'])} -> "
            f"{lat(q['latency_ms_int8'])} (batch 1, onnxruntime)"
        )
    print("  policy (kept / original channels):")
    for key, kept in s["kept_channels"].items():
        print(f"    {key:<28} {kept:>5} / {s['original_channels'][key]:<5} rate {s['policy'].get(key, 0.0):.3f}")
    print(f"  wrote {s['out_dir']}")


def run(args: argparse.Namespace) -> int:
    """Run the search job and print its summary."""
    from workers.pipeline import run_pipeline
    from workers.sink import FileSink, read_resume

    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    config = build_config(args)
    name = config.strategy.name
    bar = progress_bar(1.0, f"search {name}")

    def on_progress(phase: str, fraction: float, label: str | None) -> None:
        bar.set_description(f"{name}: {label or phase}")
        bar.n = round(float(fraction), 4)
        bar.refresh()

    sink = FileSink(args.out, on_progress=on_progress)
    resume = read_resume(args.out) if args.resume else None
    if resume is None:
        sink.start_fresh()
    try:
        summary = run_pipeline(config, args.out, sink, resume=resume, device=args.device, cache_dir=args.cache_dir)
    finally:
        bar.close()
    if summary.get("status") != "done":
        raise CliError(f"search stopped after {summary.get('candidates', 0)} candidates")
    if args.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    if summary.get("warning"):
        print(f"secateurs: warning: {summary['warning']}", file=sys.stderr)
    if (summary.get("quantize") or {}).get("warning"):
        print(f"secateurs: warning: {summary['quantize']['warning']}", file=sys.stderr)
    for key, why in (summary.get("pinned_groups") or {}).items():
        print(f"secateurs: warning: channel group {key} is kept whole: {why}", file=sys.stderr)
    sys.stdout.flush()
    return 0
