"""Files a search leaves behind: every candidate as CSV and JSON, the Pareto-front plot and the
per-layer kept-vs-original channels plot (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .base import Result
from .space import SearchSpace

FIELDS = [
    "proposal_id",
    "phase",
    "score",
    "flops",
    "params",
    "memory_bytes",
    "latency_ms",
    "wall_seconds",
    "evaluator",
    "policy",
]


def write_candidates(results: Sequence[Result], out_dir: str | Path) -> dict[str, str]:
    """`candidates.csv` (one row per candidate, the policy as JSON) and `candidates.json`."""
    out = Path(out_dir)
    csv_path, json_path = out / "candidates.csv", out / "candidates.json"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in results:
            w.writerow(
                {
                    "proposal_id": r.proposal_id,
                    "phase": r.phase,
                    "score": r.score,
                    "flops": r.flops,
                    "params": r.params,
                    "memory_bytes": r.memory_bytes,
                    "latency_ms": r.latency_ms,
                    "wall_seconds": round(r.wall_seconds, 4),
                    "evaluator": r.meta.get("evaluator", ""),
                    "policy": json.dumps(r.policy, sort_keys=True),
                }
            )
    json_path.write_text(json.dumps([r.as_dict() for r in results], indent=1, default=str))
    return {"candidates_csv": str(csv_path), "candidates_json": str(json_path)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_pareto_plot(
    results: Sequence[Result],
    front: Sequence[Result],
    best: Result | None,
    space: SearchSpace,
    path: str | Path,
    score_name: str = "accuracy",
) -> Path:
    """Score (the task's `score_label`) against the targeted resource (fraction of the original)
    for every candidate, the Pareto front as a line, the chosen one starred and the budget as a
    dashed line."""
    plt = _plt()
    key = space.target.resource_key
    orig = float(space.original[key]) or 1.0

    def x(r: Result) -> float | None:
        v = getattr(r, key)
        return None if v is None else float(v) / orig

    fig, ax = plt.subplots(figsize=(6, 4))
    phases = sorted({r.phase for r in results})
    for ph in phases:
        pts = [(x(r), r.score) for r in results if r.phase == ph and x(r) is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=14, alpha=0.6, label=ph)
    fpts = [(x(r), r.score) for r in front if x(r) is not None]
    if fpts:
        ax.plot(*zip(*fpts, strict=True), "k-", lw=1, label="Pareto front")
    if best is not None and x(best) is not None:
        ax.scatter([x(best)], [best.score], marker="*", s=180, c="red", label="chosen", zorder=5)
    ax.axvline(space.budget / orig, ls="--", c="gray", label="budget")
    ax.set_xlabel(f"{space.target.kind} (fraction of original)")
    ax.set_ylabel(f"score (validation {score_name})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_channels_plot(space: SearchSpace, kept: Mapping[str, int], path: str | Path) -> Path:
    """Bars of original and kept channels per group, in model order."""
    plt = _plt()
    keys = [g.key for g in space.groups]
    orig = [g.channels for g in space.groups]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(keys)), 4))
    idx = range(len(keys))
    ax.bar(idx, orig, color="lightgray", label="original")
    ax.bar(idx, [kept[k] for k in keys], color="tab:blue", label="kept")
    ax.set_xticks(list(idx))
    ax.set_xticklabels(keys, rotation=75, fontsize=7)
    ax.set_ylabel("channels")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
