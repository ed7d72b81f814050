"""Run-to-run variation of the hard setting's rows (`bench.hard`): one row re-run in fresh
processes under settings that change the arithmetic but not the method, to tell how far a
committed figure moves when someone re-runs it. Run by hand; not part of the suite.

- `repeat`: the same command again; on the same kind of machine it must repeat bit for bit;
- `threads N`: another torch thread count (sums split over more threads round differently);
- `avx2`, `avx512 without AMX`: the CPU kernels oneDNN and MKL pick on a machine without
  AVX-512, or with AVX-512 but none of the newer extensions (forced with ONEDNN_MAX_CPU_ISA and
  MKL_ENABLE_INSTRUCTIONS): what another CPU model does to the numbers.

    # the uniform row and Torch-Pruning's global cut of resnet56 at 10% FLOPs, seed 0
    python -m bench.variation --variants "threads 1" "threads 1 again" "threads 2" "avx2, threads 1" \
        "avx512 without AMX, threads 1"
    # one variant a call (each appended to the same results file)
    python -m bench.variation --variants "threads 2" --resume

Writes `--results`: one row per variant and method (the `bench.hard` row, the variant's
settings and the exact command), a Markdown table (each variant's accuracy and the spread,
max - min) and `calls`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, markdown_table, previous_calls, this_call, write_results

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
AVX512 = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}
# each variant: bench.hard's thread count and the environment it runs in
VARIANTS: dict[str, tuple[int, dict[str, str]]] = {
    "threads 1": (1, {}),
    "threads 1 again": (1, {}),
    "threads 2": (2, {}),
    "avx2, threads 1": (1, AVX2),
    "avx2, threads 2": (2, AVX2),
    "avx512 without AMX, threads 1": (1, AVX512),
}


def hard_command(args: argparse.Namespace, threads: int, results: Path, out: Path) -> list[str]:
    """The `bench.hard` call of one variant."""
    return [
        *("--models", args.model, "--targets", args.target, "--seeds", str(args.seed)),
        *("--rows", *args.rows, "--peers", *args.peers),
        *("--threads", str(threads), "--results", str(results), "--out", str(out)),
    ]


def render(rows: list[dict[str, Any]]) -> str:
    """Per method: each variant's test accuracy and the spread over the variants (max - min; a
    repeat of one setting adds nothing to it, where a std would count that setting twice)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["method"], r["variant"]): r["accuracy"] for r in rows}
    cells = []
    for m in methods:
        accs = [by[m, v] for v in variants if (m, v) in by]
        each = (f"{by[m, v]:.4f}" if (m, v) in by else "-" for v in variants)
        cells.append([m, *each, f"{max(accs) - min(accs):.4f}"])
    return markdown_table(["method", *variants, "max - min"], cells) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--target", default="flops=0.1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", nargs="+", default=["uniform"], help="bench.hard's --rows")
    ap.add_argument("--peers", nargs="*", default=["tp-global"], help="bench.hard's --peers")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--resume", action="store_true", help="keep the variants already in --results, run the rest")
    ap.add_argument("--out", default="runs/bench-variation")
    ap.add_argument(
        "--results", default=str(RESULTS / "variation-resnet56-fashion-mnist-16px-flops10.json"), help="JSON"
    )
    args = ap.parse_args(argv)
    results = Path(args.results)
    rows: list[dict[str, Any]] = []
    calls = [this_call("bench.variation", argv)]
    if args.resume and results.exists():
        rows = json.loads(results.read_text())["rows"]
        calls = previous_calls(results) + calls
    done = {r["variant"] for r in rows}
    for variant in args.variants:
        if variant in done:
            continue
        threads, env = VARIANTS[variant]
        work = Path(args.out) / variant.replace(" ", "_").replace(",", "")
        hard_args = hard_command(args, threads, work / "hard.json", work / "runs")
        command = " ".join(
            [*(f"{k}={v}" for k, v in env.items()), shlex.join(["python", "-m", "bench.hard", *hard_args])]
        )
        print(command, file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "bench.hard", *hard_args], env={**os.environ, **env}, check=True)
        written = json.loads((work / "hard.json").read_text())
        for r in written["rows"]:
            rows.append({"variant": variant, "threads": threads, "env": env, "command": command, **r})
        table = render(rows)
        write_results(results, {"config": vars(args), "rows": rows, "table": table}, calls)
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
