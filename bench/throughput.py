"""Search speed (run by hand; not part of the test suite): budget-query time, candidates per
second and time to result of each strategy, the old path against the new in the same run, and
evaluation on 1 and 2 workers, in-process and on Ray.

- old path: what a search did before the exact cost model (`pruning.cost`): every budget query
  cuts a copy of the network (`pruning.cut.prune`: copy, trace, cut, check) and counts it with
  `count_flops`, `count_params` and `peak_memory_bytes`; every candidate is cut the same way.
- new path: `search.space.SearchSpace` as it is: queries from the cost model traced once,
  candidates cut from that trace by index selection.

Both paths search the same trained model with the same options, seeds and evaluators, so their
candidates are the same networks with the same scores (the run checks that the best scores
agree). Keep runs small on a shared machine: few candidates, a validation cap (--val-batches).

    python -m bench.throughput                                   # the README's table
    python -m bench.throughput --models resnet20 --sizes 16 --strategies eagleeye --paths new
    python -m bench.throughput --workers                         # also 1 vs 2 workers, in-process vs Ray

Writes --results (the rows, the table, the brief-trained models' SHA-256 and `calls`: the call
that wrote it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bench.common import base_model, default_evaluator, eval_context, this_call, write_results
from pruning.criteria import get_criterion
from pruning.cut import cut_model, prune, resolve_policy
from pruning.data import calibration_batches, load_dataset
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.models import build_model, list_models
from pruning.train import TrainConfig, train
from search.base import SearchError
from search.evaluators import make_evaluator
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace

BASE_SHA256: dict[str, str] = {}
"""The SHA-256 of each briefly trained model the run used (by model and size), for its results file."""
OPTIONS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "global": {},
    "sensitivity": {"rates": [0.3, 0.6]},
    "eagleeye": {"n_samples": 10, "top_k": 1, "finetune_steps": 10},
    "netadapt": {"max_iterations": 2},
    "optuna": {"n_trials": 10, "n_startup_trials": 5},
    "amc": {"episodes": 6, "warmup": 3},
    "metapruning": {"train_steps": 20, "train_chunk": 10, "population": 4, "generations": 1, "topk": 2},
}
EVALUATOR_OPTIONS: dict[str, dict[str, Any]] = {"finetune": {"steps": 10}, "reconstruct": {"n_points": 4}}


class Meter:
    """Calls and seconds of a space's budget queries."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0


class NewSpace(SearchSpace):
    """The search space as it is, its budget queries timed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.meter = Meter()
        self._old: dict[tuple[int, ...], dict[str, Any]] = {}
        super().__init__(*args, **kwargs)
        self.meter = Meter()  # the constructor's own queries are setup, not search

    def count(self, kept: Mapping[str, int], cut: nn.Module | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return self._count(kept, cut)
        finally:
            self.meter.calls += 1
            self.meter.seconds += time.perf_counter() - t0

    def _count(self, kept: Mapping[str, int], cut: nn.Module | None) -> dict[str, Any]:
        return super().count(kept, cut)


class OldSpace(NewSpace):
    """The path before the cost model: a query cuts a copy and counts it (cached by kept
    counts, as it was); a candidate is cut by `prune` (copy, trace, cut, check)."""

    def _count(self, kept: Mapping[str, int], cut: nn.Module | None) -> dict[str, Any]:
        key = tuple(int(kept[g.key]) for g in self.groups)
        if key not in self._old:
            if cut is None:
                cut = prune(self.model, dict(kept), "l1", input_shape=self.input_shape)
            self._old[key] = {
                "flops": count_flops(cut, self.input_shape),
                "params": count_params(cut),
                "memory_bytes": peak_memory_bytes(cut, self.input_shape),
                "latency_ms": None,
            }
        return dict(self._old[key])

    def cut_indices(
        self,
        policy: Mapping[str, float],
        criterion: str | None = None,
        calibration: Any = None,
        model: nn.Module | None = None,
    ) -> tuple[nn.Module, dict[str, list[int]]]:
        crit = criterion or self.criterion
        calib = calibration if calibration is not None else self.calibration
        outcome = cut_model(
            model if model is not None else self.model,
            self.kept(policy),
            crit,
            input_shape=self.input_shape,
            calibration=calib if get_criterion(crit).needs_data else None,
        )
        return outcome.model, outcome.kept


def make_space(path: str, model: nn.Module, shape: tuple[int, ...], target: str, calib: Any) -> NewSpace:
    """The space of one path."""
    return (OldSpace if path == "old" else NewSpace)(model, shape, target, calibration=calib)


def load(args: argparse.Namespace, name: str, size: int) -> tuple[nn.Module, Any, tuple[int, ...]]:
    """The data at `size` px and `name` trained briefly on it (cached under --out)."""
    data = load_dataset("fashion-mnist", input_size=size, subset=args.train_subset, seed=0, path=args.data)
    shape = (data.in_channels, data.input_size, data.input_size)
    facts = {
        "name": "fashion-mnist",
        "path": args.data,
        "input_size": size,
        "subset": args.train_subset,
        "split_seed": 0,
    }
    base = base_model(name, data, TrainConfig(epochs=1, lr=0.05, seed=0), facts, args.out)
    BASE_SHA256[f"{name}-{size}px"] = base.sha256
    return base.model, data, shape


def budget_queries(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per zoo model and size: a budget query's time on the new path (median over random kept
    vectors) and the old (median over a few), and the trace time."""
    rows = []
    for name in args.query_models or list_models():
        for size in args.sizes:
            model = build_model(name, num_classes=10, in_channels=1, input_size=size).eval()
            shape = (1, size, size)
            t0 = time.perf_counter()
            space = make_space("new", model, shape, "flops=0.5", None)
            trace_s = time.perf_counter() - t0
            rng = random.Random(0)
            vectors = [
                resolve_policy(space.graph, {g.key: rng.uniform(0, 0.9) for g in space.groups}) for _ in range(200)
            ]
            new = []
            for kept in vectors:
                t = time.perf_counter()
                space.costs.count(kept)
                new.append(time.perf_counter() - t)
            olds = []
            for kept in vectors[: args.old_queries]:
                t = time.perf_counter()
                OldSpace._count(space, kept, None)  # type: ignore[arg-type]  # the same space, counted the old way
                olds.append(time.perf_counter() - t)
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "exact": space.costs.exact,
                    "trace_s": trace_s,
                    "query_new_us": statistics.median(new) * 1e6,
                    "query_new_p95_us": sorted(new)[int(0.95 * len(new))] * 1e6,
                    "query_old_ms": statistics.median(olds) * 1e3,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def timing_split(results: list[Any]) -> dict[str, float]:
    """Mean seconds per step over the candidates that report a split."""
    steps: dict[str, list[float]] = {}
    for r in results:
        for k, v in (r.meta.get("timing") or {}).items():
            steps.setdefault(k, []).append(v)
    return {k: statistics.mean(v) for k, v in steps.items()}


def strategies(args: argparse.Namespace, rows: list[dict[str, Any]], save: Any) -> list[dict[str, Any]]:
    """Each strategy on each model and size, old path and new (rows appended to `rows`, saved as they come)."""
    for name in args.models:
        for size in args.sizes:
            model, data, shape = load(args, name, size)
            calib = calibration_batches(data.train, 4, 64, seed=0)
            for strat in args.strategies:
                best: dict[str, float] = {}
                for path in args.paths:
                    torch.manual_seed(0)
                    t0 = time.perf_counter()
                    try:
                        space = make_space(path, model, shape, args.target, calib)
                    except SearchError as exc:
                        print(f"skipping {strat}: {exc}", file=sys.stderr)
                        continue
                    setup = time.perf_counter() - t0
                    ctx = eval_context(model, data, space, calib, 0, val_batches=args.val_batches)
                    evaluator = default_evaluator(strat, ctx, EVALUATOR_OPTIONS)
                    ev_name = evaluator.name
                    strategy = make_strategy(strat, space, seed=0, **OPTIONS.get(strat, {}))
                    outcome = run_search(strategy, evaluator)
                    strategy.close()
                    total = time.perf_counter() - t0
                    n = len(outcome.results)
                    best[path] = outcome.best.score if outcome.best else float("nan")
                    rows.append(
                        {
                            "model": name,
                            "size": size,
                            "strategy": strat,
                            "evaluator": ev_name,
                            "path": path,
                            "candidates": n,
                            "search_s": outcome.seconds,
                            "candidates_per_s": n / outcome.seconds if outcome.seconds else 0.0,
                            "time_to_result_s": total,
                            "space_setup_s": setup,
                            "queries": space.meter.calls,
                            "query_s": space.meter.seconds,
                            "best_score": best[path],
                            "timing": timing_split(outcome.results),
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    save()
                if len(best) == 2 and abs(best["old"] - best["new"]) > 1e-5:
                    print(f"WARNING {name} {size} {strat}: best scores differ {best}", file=sys.stderr)
    return rows


def workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """EagleEye's sampling (adaptive BN) on the new path: in-process (1 worker) against Ray with
    1 and 2 workers (each actor traces once, then cuts from its trace)."""
    import ray

    from workers.cluster import ensure_ray
    from workers.executor import RayExecutor

    rows = []
    model, data, shape = load(args, args.models[0], args.sizes[0])
    calib = calibration_batches(data.train, 4, 64, seed=0)
    opts = {"n_samples": args.worker_samples, "top_k": 0}

    def run(label: str, n_workers: int, ray_workers: int | None) -> None:
        space = make_space("new", model, shape, args.target, calib)
        ev = make_evaluator("adaptive-bn", eval_context(model, data, space, calib, 0, val_batches=args.val_batches))
        executor = RayExecutor(ev, {}, n_workers=ray_workers) if ray_workers else None
        if executor is not None:  # each actor traces its space on start: not part of the search
            ray.get([a.ready.remote() for a in executor.actors])
        strategy = make_strategy("eagleeye", space, seed=0, **opts)
        outcome = run_search(strategy, ev, executor=executor, batch_size=n_workers * args.worker_batch)
        if executor is not None:
            executor.close()
        rows.append(
            {
                "setup": label,
                "proposals_per_ask": n_workers * args.worker_batch,
                "candidates": len(outcome.results),
                "search_s": outcome.seconds,
                "candidates_per_s": outcome.candidates_per_second,
                "nodes": sorted({str(r.meta.get("worker_pid", "local")) for r in outcome.results}),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    run("in-process, 1 worker", 1, None)
    ensure_ray("local", num_cpus=2)
    try:
        run("Ray, 1 worker", 1, 1)
        run("Ray, 2 workers", 2, 2)
    finally:
        ray.shutdown()
    return rows


class Masked:
    """A full-width copy of the model whose removed channels are zeroed after their BN (or after
    the layer, where no BN follows): the same numbers as the cut network, in exact arithmetic."""

    def __init__(self, space: SearchSpace, model: nn.Module) -> None:
        self.net = copy.deepcopy(model)
        self.masks: dict[str, torch.Tensor] = {}
        modules = dict(self.net.named_modules())
        for g in space.groups:
            sites = g.bns + [m for m in g.members if space.graph.following_bn(m) is None]
            for site in sites:
                modules[site].register_forward_hook(self._hook(g.key))

    def _hook(self, key: str) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            mask = self.masks.get(key)
            if mask is None:
                return None
            return output * mask.view(1, -1, *([1] * (output.dim() - 2)))

        return hook

    def set(self, space: SearchSpace, policy: Mapping[str, float]) -> None:
        """Mask the channels the space's cut would remove for `policy`."""
        _, kept = space.cut_indices(policy)  # the same channel choice (its cut is not used)
        self.masks = {}
        for g in space.groups:
            if len(kept[g.key]) < g.channels:
                m = torch.zeros(g.channels)
                m[kept[g.key]] = 1.0
                self.masks[g.key] = m


def masks_vs_cut(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per evaluator step: the index-selection cut against channel masks on a full-width copy,
    time per candidate and the largest score difference (adaptive BN: one persistent masked
    copy, no copy per candidate; fine-tune: a masked copy per candidate, as weights change)."""
    from pruning.bn import recalibrate_bn
    from pruning.train import evaluate

    rows = []
    model, data, shape = load(args, args.models[0], args.sizes[0])
    calib = calibration_batches(data.train, 4, 64, seed=0)
    space = make_space("new", model, shape, args.target, calib)
    rng = random.Random(0)
    policies = [{k: rng.uniform(0.2, 0.7) for k in space.keys} for _ in range(args.mask_samples)]
    masked = Masked(space, model)

    def validate(net: nn.Module) -> float:
        return evaluate(net, data.val, batch_size=256, max_batches=args.val_batches)

    def finetune(net: nn.Module) -> None:
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=1e9, lr=0.01, batch_size=64, seed=0, max_steps=10)
        train(net, data.train, cfg, device="cpu")

    for evaluator in ("adaptive-bn", "finetune"):
        times: dict[str, list[float]] = {"cut": [], "mask": []}
        diffs = []
        for policy in policies:
            t0 = time.perf_counter()
            net = space.cut(policy)
            recalibrate_bn(net, calib)
            if evaluator == "finetune":
                finetune(net)
            a = validate(net)
            times["cut"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            masked.set(space, policy)
            target = masked.net
            if evaluator == "finetune":  # training changes the weights: a copy per candidate (hooks come along)
                target = copy.deepcopy(masked.net)
            recalibrate_bn(target, calib)
            if evaluator == "finetune":
                finetune(target)
            b = validate(target)
            times["mask"].append(time.perf_counter() - t0)
            diffs.append(abs(a - b))
        rows.append(
            {
                "evaluator": evaluator,
                "candidates": len(policies),
                "cut_s": statistics.mean(times["cut"]),
                "mask_s": statistics.mean(times["mask"]),
                "max_score_diff": max(diffs),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def render(queries: list[dict], rows: list[dict], pools: list[dict], args: argparse.Namespace, load: str) -> str:
    lines = [
        f"Load average before the run: {load}; {args.threads} torch thread(s); val batches {args.val_batches}.",
        "",
    ]
    if queries:
        lines += [
            "| model | px | exact | trace s | query new (median, p95) | query old (median) |",
            "|---|---|---|---|---|---|",
        ]
        for q in queries:
            lines.append(
                f"| {q['model']} | {q['size']} | {q['exact']} | {q['trace_s']:.2f} | "
                f"{q['query_new_us']:.0f} µs, {q['query_new_p95_us']:.0f} µs | {q['query_old_ms']:.0f} ms |"
            )
        lines.append("")
    if rows:
        lines += [
            (
                "| model | px | strategy (evaluator) | candidates | cand/s old → new | speed-up | "
                "time to result old → new (s) | budget queries (old s → new s) | new: s per candidate by step |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        keyed: dict[tuple, dict[str, dict]] = {}
        for r in rows:
            keyed.setdefault((r["model"], r["size"], r["strategy"], r["evaluator"]), {})[r["path"]] = r
        for (model, size, strat, ev), by in keyed.items():
            old, new = by.get("old"), by.get("new")
            ref = new or old
            assert ref is not None
            split = ", ".join(f"{k} {v:.3f}" for k, v in (new or {}).get("timing", {}).items())
            cps = (
                f"{old['candidates_per_s']:.2f} → {new['candidates_per_s']:.2f}"
                if old and new
                else f"{ref['candidates_per_s']:.2f}"
            )
            up = f"{new['candidates_per_s'] / max(old['candidates_per_s'], 1e-9):.1f}x" if old and new else "—"
            ttr = (
                f"{old['time_to_result_s']:.1f} → {new['time_to_result_s']:.1f}"
                if old and new
                else f"{ref['time_to_result_s']:.1f}"
            )
            qs = (
                f"{old['queries']} ({old['query_s']:.1f}) → {new['queries']} ({new['query_s']:.3f})"
                if old and new
                else f"{ref['queries']}"
            )
            lines.append(
                f"| {model} | {size} | {strat} ({ev}) | {ref['candidates']} | {cps} | {up} | {ttr} | {qs} | {split} |"
            )
        lines.append("")
    if pools:
        lines += ["| evaluation | candidates | search s | cand/s |", "|---|---|---|---|"]
        for p in pools:
            lines.append(f"| {p['setup']} | {p['candidates']} | {p['search_s']:.1f} | {p['candidates_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def render_masks(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "| evaluator | candidates | s per candidate: cut → masks | largest score difference |"
    lines = ["", head, "|---|---|---|---|"]
    lines += [
        f"| {r['evaluator']} | {r['candidates']} | {r['cut_s']:.3f} → {r['mask_s']:.3f} | {r['max_score_diff']:.2g} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 28])
    ap.add_argument("--strategies", nargs="+", default=list(OPTIONS))
    ap.add_argument("--paths", nargs="+", default=["old", "new"], choices=["old", "new"])
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--query-models", nargs="*", default=None, help="models for the query timing (default: the zoo)")
    ap.add_argument("--old-queries", type=int, default=5, help="old-path queries timed per model")
    ap.add_argument("--no-queries", dest="queries", action="store_false")
    ap.add_argument("--no-strategies", dest="run_strategies", action="store_false")
    ap.add_argument("--workers", action="store_true", help="also 1 vs 2 workers and in-process vs Ray")
    ap.add_argument("--worker-samples", type=int, default=12)
    ap.add_argument("--worker-batch", type=int, default=1, help="proposals per ask and worker")
    ap.add_argument("--masks", action="store_true", help="also channel masks against the index-selection cut")
    ap.add_argument("--mask-samples", type=int, default=4)
    ap.add_argument("--val-batches", type=int, default=4, help="validation batches of 256 per candidate")
    ap.add_argument("--train-subset", type=int, default=3000, help="training images for the brief training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-throughput")
    ap.add_argument("--results", default="bench/results/throughput.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    queries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    mask_rows: list[dict[str, Any]] = []
    calls = [this_call("bench.throughput", argv)]

    def save() -> str:
        """Write what is measured so far (a long run keeps its rows if stopped)."""
        table = render(queries, rows, pools, args, load_avg) + render_masks(mask_rows)
        record = {
            "argv": sys.argv[1:] if argv is None else argv,
            "load_before": load_avg,
            "load_now": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "threads": args.threads,
            "torch": torch.__version__,
            "base_sha256": BASE_SHA256,
            "queries": queries,
            "strategies": rows,
            "workers": pools,
            "masks": mask_rows,
            "table": table,
        }
        write_results(args.results, record, calls)
        return table

    if args.queries:
        queries += budget_queries(args)
        save()
    if args.run_strategies:
        strategies(args, rows, save)
    if args.workers:
        pools += workers(args)
        save()
    if args.masks:
        mask_rows += masks_vs_cut(args)
    table = save()
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(table)
    print(f"load average after: {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
