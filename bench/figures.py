"""Recompute the figures docs/results/ quotes from the committed results files (no training).

Reads bench/results/hard-*.json and throughput-resnet20-16px-quiet.json only (standard library),
so every derived number in the write-ups (paired differences, spreads, standard errors, speed-ups,
summed CPU seconds) can be checked by running

    python -m bench.figures            # every section
    python -m bench.figures --section spread

Rows of one method in several files are merged by seed (a row run twice must agree).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# (model, target, method, fine-tune lr, fine-tune epochs) -> {seed: row}
Key = tuple[str, str, str, float, float]


def hard_rows() -> dict[Key, dict[int, dict[str, Any]]]:
    """Every hard-setting row, grouped by setting and method, one row per seed."""
    groups: dict[Key, dict[int, dict[str, Any]]] = {}
    for path in sorted(RESULTS.glob("hard-*.json")):
        data = json.loads(path.read_text())
        cfg = data["config"]
        for row in data["rows"]:
            key = (row["model"], row["target"], row["method"], cfg["finetune_lr"], cfg["finetune_epochs"])
            seeds = groups.setdefault(key, {})
            old = seeds.get(row["seed"])
            if old is not None and old["accuracy"] != row["accuracy"]:
                raise SystemExit(f"{path.name}: {key} seed {row['seed']} differs from an earlier file")
            seeds[row["seed"]] = {**row, "file": path.name}
    return groups


def pts(x: float) -> str:
    """A fraction as accuracy points, signed."""
    return f"{100 * x:+.2f}"


def std(xs: list[float]) -> float:
    """Sample standard deviation (n - 1), as the tables use; 0 for one value."""
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def get(
    groups: dict[Key, dict[int, dict[str, Any]]],
    model: str,
    target: str,
    method: str,
    lr: float = 0.05,
    epochs: float = 3,
) -> dict[int, dict[str, Any]]:
    """One method's rows by seed (empty when it was not run)."""
    return groups.get((model, target, method, lr, epochs), {})


def paired(
    a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], label: str, seeds: Iterable[int] | None = None
) -> None:
    """a minus b seed by seed: per seed, mean, std and standard error of the mean difference."""
    common = sorted(set(a) & set(b) if seeds is None else seeds)
    d = [a[s]["accuracy"] - b[s]["accuracy"] for s in common]
    se = std(d) / math.sqrt(len(d))
    print(
        f"{label}, seeds {common}: per seed {', '.join(pts(x) for x in d)}; mean {pts(statistics.mean(d))} "
        f"(std {100 * std(d):.2f}, s.e. {100 * se:.2f}); behind on {sum(x < 0 for x in d)} of {len(d)}"
    )


def summary(rows: dict[int, dict[str, Any]], seeds: Iterable[int] | None = None) -> str:
    """mean ± std (points), per seed, mean seconds."""
    use = sorted(rows if seeds is None else seeds)
    accs = [rows[s]["accuracy"] for s in use]
    secs = [rows[s]["seconds"] for s in use]
    return (
        f"{statistics.mean(accs):.4f} ± {std(accs):.4f} (std), seeds {use}, "
        f"per seed {', '.join(f'{a:.4f}' for a in accs)}, seconds {statistics.mean(secs):.0f}"
    )


def section_tables(groups: dict[Key, dict[int, dict[str, Any]]]) -> None:
    """Every hard-setting method: mean ± std over its seeds, per seed, FLOPs kept, mean seconds, files."""
    head = ["model", "target", "method", "lr", "epochs", "test accuracy (mean ± std)", "per seed", "FLOPs kept"]
    print("| " + " | ".join([*head, "seconds", "files"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (model, target, method, lr, ep), rows in sorted(groups.items()):
        use = sorted(rows)
        accs = [rows[s]["accuracy"] for s in use]
        print(
            f"| {model} | {target} | {method} | {lr} | {ep:g} | {statistics.mean(accs):.4f} ± {std(accs):.4f} "
            f"| {', '.join(f'{a:.4f}' for a in accs)} (seeds {','.join(map(str, use))}) "
            f"| {statistics.mean(rows[s]['flops_fraction'] for s in use):.3f} "
            f"| {statistics.mean(rows[s]['seconds'] for s in use):.0f} "
            f"| {', '.join(sorted({rows[s]['file'] for s in use}))} |"
        )


def section_claims(groups: dict[Key, dict[int, dict[str, Any]]]) -> None:
    """The leads and comparisons docs/results/hard.md states."""
    g = groups
    r56, mob = "resnet56", "mobilenetv2"
    print("## resnet56, 80% cut, lr 0.01 (8 seeds where run)")
    paired(
        get(g, r56, "flops=0.2", "eagleeye", 0.01), get(g, r56, "flops=0.2", "tp-global", 0.01), "eagleeye - tp-global"
    )
    paired(get(g, r56, "flops=0.2", "eagleeye", 0.01), get(g, r56, "flops=0.2", "uniform", 0.01), "eagleeye - uniform")
    paired(get(g, r56, "flops=0.2", "fastnas", 0.01), get(g, r56, "flops=0.2", "eagleeye", 0.01), "fastnas - eagleeye")
    print("## resnet56, 80% cut: the best row against FastNAS")
    best = "eagleeye + ASHA, streams last, inner to 5%"
    fastnas = get(g, r56, "flops=0.2", "fastnas")
    paired(get(g, r56, "flops=0.2", best), fastnas, best + " - fastnas")
    paired(get(g, r56, "flops=0.2", best, 0.05, 2.363), fastnas, best + " at 471 steps in all - fastnas")
    paired(get(g, r56, "flops=0.2", "eagleeye"), fastnas, "eagleeye (default space) - fastnas")
    paired(get(g, r56, "flops=0.2", "eagleeye + ASHA"), fastnas, "eagleeye + ASHA (default space) - fastnas")
    print("## mobilenetv2, 80% cut")
    paired(get(g, mob, "flops=0.2", "eagleeye"), get(g, mob, "flops=0.2", "fastnas"), "eagleeye - fastnas")
    paired(
        get(g, mob, "flops=0.2", "eagleeye", 0.05, 2.363),
        get(g, mob, "flops=0.2", "fastnas"),
        "eagleeye at 471 steps in all - fastnas",
    )
    paired(get(g, mob, "flops=0.2", "eagleeye"), get(g, mob, "flops=0.2", "uniform"), "eagleeye - uniform")
    print("## resnet56, 90% cut: seeds 0-2 (used to choose the space) and 3-5 (fresh)")
    peers = ("tp-global", "tp-groupnorm", "fastnas")
    for method in ("eagleeye, streams last", "eagleeye, streams whole, inner to 5%"):
        rows = get(g, r56, "flops=0.1", method)
        for seeds in ([0, 1, 2], [3, 4, 5]):
            if not set(seeds) <= set(rows):
                continue
            ours = statistics.mean(rows[s]["accuracy"] for s in seeds)
            means = {
                p: statistics.mean(get(g, r56, "flops=0.1", p)[s]["accuracy"] for s in seeds)
                for p in peers
                if set(seeds) <= set(get(g, r56, "flops=0.1", p))
            }
            top = max(means, key=lambda p: means[p])
            print(
                f"{method}, seeds {seeds}: {summary(rows, seeds)}; best peer {top} {means[top]:.4f}: "
                f"lead {pts(ours - means[top])}; peers run: {sorted(means)}"
            )
            for p in means:
                print(f"    {p}: {summary(get(g, r56, 'flops=0.1', p), seeds)}")
    print("## seed-to-seed std of the 3-seed rows (lr 0.05, 3 epochs), points")
    for target in ("flops=0.2", "flops=0.1"):
        for kd in (False, True):
            stds = {
                (m, meth): std([r["accuracy"] for s, r in rows.items() if s <= 2])
                for (m, t, meth, lr, ep), rows in g.items()
                if t == target and lr == 0.05 and ep == 3 and ("kd" in meth.lower()) == kd and {0, 1, 2} <= set(rows)
            }
            if not stds:
                continue
            lo, hi = min(stds, key=lambda k: stds[k]), max(stds, key=lambda k: stds[k])
            print(
                f"{target} {'with' if kd else 'without'} distillation: {len(stds)} rows, std from "
                f"{100 * stds[lo]:.2f} ({lo}) to {100 * stds[hi]:.2f} ({hi}); median "
                f"{100 * statistics.median(stds.values()):.2f}"
            )


def section_spread(groups: dict[Key, dict[int, dict[str, Any]]]) -> None:
    """Seed-to-seed spread: what one more seed moves, and what it means for a 3-seed mean."""
    for lr in (0.05, 0.01):
        rows = get(groups, "resnet56", "flops=0.2", "uniform", lr)
        accs = [rows[s]["accuracy"] for s in sorted(rows)]
        sd = std(accs)
        print(
            f"uniform, resnet56, 80% cut, lr {lr}, {len(accs)} seeds: mean {statistics.mean(accs):.4f}, "
            f"std {100 * sd:.2f} points, range {min(accs):.4f} to {max(accs):.4f}; s.e. of a 3-seed mean "
            f"{100 * sd / math.sqrt(3):.2f}, of a difference of two 3-seed means {100 * sd * math.sqrt(2 / 3):.2f}"
        )
    stds = [
        std([r["accuracy"] for r in rows.values()])
        for (_, _, _, lr, ep), rows in groups.items()
        if len(rows) >= 3 and lr == 0.05 and ep == 3
    ]
    print(
        f"all {len(stds)} hard-setting rows with 3 or more seeds at lr 0.05: median std "
        f"{100 * statistics.median(stds):.2f} points, range {100 * min(stds):.2f} to {100 * max(stds):.2f}"
    )
    corr = json.loads((RESULTS / "correlation-hard-resnet56-fashion-mnist-16px.json").read_text())
    for row in corr["rows"]:
        noise = row["finetune_noise"]
        print(
            f"one sub-net, {row['target']}, 3 data orders: {noise}, span {100 * (max(noise) - min(noise)):.2f} "
            f"points; 16 sub-nets span {100 * (row['test_max'] - row['test_min']):.2f}"
        )


FULL_ROWS = [
    "uniform",
    "eagleeye",
    "eagleeye + ASHA",
    "eagleeye, streams last",
    "eagleeye + ASHA, streams last, inner to 5%",
]
FULL_PEERS = ["tp-global", "tp-groupnorm", "fastnas"]


def section_cpu(groups: dict[Key, dict[int, dict[str, Any]]]) -> None:
    """CPU seconds the full-setting command's rows took in the 16 px setting (base training not included)."""
    total, missing = 0.0, []
    for model in ("resnet56", "mobilenetv2"):
        for target in ("flops=0.2", "flops=0.1"):
            for method in FULL_ROWS + FULL_PEERS:
                rows = get(groups, model, target, method)
                if not rows:
                    missing.append(f"{model} {target} {method}")
                    continue
                total += 3 * statistics.mean(r["seconds"] for r in rows.values())
    print(
        f"rows measured: {3 * (20 - len(missing))} of 60 (3 seeds each), {total / 3600:.1f} hours of one thread "
        f"at 16 px on 10,000 images; not measured at 16 px: {missing}"
    )


def section_speed() -> None:
    """Old path against new, quiet machine: every strategy row, slower ones included."""
    data = json.loads((RESULTS / "throughput-resnet20-16px-quiet.json").read_text())
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in data["strategies"]:
        by.setdefault(r["strategy"], {})[r["path"]] = r
    for name, p in by.items():
        old, new = p["old"], p["new"]
        print(
            f"{name} ({new['evaluator']}): {new['candidates']} cand., cand/s {old['candidates_per_s']:.2f} -> "
            f"{new['candidates_per_s']:.2f} ({new['candidates_per_s'] / old['candidates_per_s']:.1f}x), time to "
            f"result {old['time_to_result_s']:.1f} -> {new['time_to_result_s']:.1f} s, queries {new['queries']} "
            f"({old['query_s']:.1f} -> {new['query_s']:.3f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["tables", "claims", "spread", "cpu", "speed"], nargs="*")
    args = ap.parse_args(argv)
    groups = hard_rows()
    sections: dict[str, Callable[[], None]] = {
        "tables": lambda: section_tables(groups),
        "claims": lambda: section_claims(groups),
        "spread": lambda: section_spread(groups),
        "cpu": lambda: section_cpu(groups),
        "speed": section_speed,
    }
    for name in args.section or sections:
        print(f"\n# {name}\n")
        sections[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
