"""Submit latency benchmark (run by hand): how long `POST /v1/jobs` takes to answer, for every
zoo model at 224 px and for an uploaded `.pt2` program, from the first submit after a fresh
server start on.

It starts `secateurs serve` (a temporary data dir, SQLite, the scheduler off so the queued jobs
do not run and take the CPU: a submit's own work does not depend on it), makes a token, and for
each zoo model sends `--submits` submits on synthetic data at `--size` px, alternating a feasible
target (half the FLOPs) and an infeasible one (0.01 % of them), timing each request at the
client (keep-alive HTTP). Then it exports a zoo ResNet-20 at `--size` px as a program, uploads
it (the upload converts and traces it) and times `--submits` submits of it; restarts the server
on the same data dir (the upload's trace is gone with the process) and times them again. Each
row gives the first submit, the median and the max, and the answers (201: accepted; 422: the
target refused at once). The machine's load average is recorded before and after.

    python -m bench.submit                          # every zoo model and a program, 20 submits each
    python -m bench.submit --submits 5 --models resnet56 --port 18200"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import this_call, write_results

GOAL_MS = 100.0
"""The answer time a submit should stay under, whatever the model."""
FEASIBLE, INFEASIBLE = {"flops": 0.5}, {"flops": 0.0001}


def _server(data_dir: Path, port: int) -> Any:
    from service.devserver import ServerProcess

    srv = ServerProcess(data_dir, SECATEURS_SCHEDULER="false")
    srv.port, srv.url = port, f"http://127.0.0.1:{port}"
    return srv.start()


def _time_submits(client: Any, headers: dict[str, str], spec: dict[str, Any], n: int, gap: float) -> dict[str, Any]:
    """`n` submits of `spec`, feasible and infeasible targets in turn, `gap` seconds apart: their
    times and answers."""
    times, answers = [], Counter()
    for i in range(n):
        if i and gap:
            time.sleep(gap)
        body = {**spec, "target": FEASIBLE if i % 2 == 0 else INFEASIBLE}
        t = time.perf_counter()
        r = client.post("/v1/jobs", json=body, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        if r.status_code not in (201, 422):
            raise SystemExit(f"submit answered {r.status_code}: {r.text}")
        answers[str(r.status_code)] += 1
    return {
        "submits": n,
        "first_ms": round(times[0], 1),
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "answers": dict(answers),
        "times_ms": [round(x, 1) for x in times],
    }


def _program(path: Path, size: int) -> Path:
    from pruning.export import export_program
    from pruning.models import build_model

    net = build_model("resnet20", num_classes=10, in_channels=3, input_size=size).eval()
    return export_program(net, path, (3, size, size))


def run(
    models: Sequence[str], submits: int, size: int, port: int, gap: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (one per model and server start) and the loads before and after."""
    import httpx

    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        root = Path(tmp)
        program = _program(root / "resnet20.pt2", size)
        srv = _server(root / "data", port)
        try:
            out = srv.cli("token", "create", "--team", "bench")
            token = out.stdout.strip().splitlines()[-1]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=srv.url, timeout=120) as client:
                for name in models:
                    spec = {
                        "model": {"zoo": name},
                        "data": {"name": "synthetic", "input_size": size},
                        "strategy": {"name": "uniform"},
                    }
                    row = _time_submits(client, headers, spec, submits, gap)
                    rows.append({"model": name, "kind": "zoo", "server": "fresh start", **row})
                    print(rows[-1]["model"], {k: v for k, v in row.items() if k != "times_ms"}, flush=True)
                t = time.perf_counter()
                up = client.post("/v1/models", files={"file": ("resnet20.pt2", program.read_bytes())}, headers=headers)
                upload_ms = (time.perf_counter() - t) * 1000
                if up.status_code != 201:
                    rows.append({"model": "resnet20.pt2", "kind": "program", "upload_error": up.text})
                    return rows, {"load_before": list(load_before), "load_after": list(os.getloadavg())}
                spec = {"model": {"upload": up.json()["id"]}, "data": {"name": "synthetic"}}
                spec["strategy"] = {"name": "uniform"}
                row = _time_submits(client, headers, spec, submits, gap)
                rows.append(
                    {
                        "model": "resnet20.pt2",
                        "kind": "program",
                        "server": "after upload",
                        **row,
                        "upload_ms": round(upload_ms, 1),
                    }
                )
                print(rows[-1]["model"], rows[-1]["server"], {k: v for k, v in row.items() if k != "times_ms"})
        finally:
            srv.stop()
        srv = _server(root / "data", port)  # the same data dir and store: only the process is new
        try:
            with httpx.Client(base_url=srv.url, timeout=120) as client:
                row = _time_submits(client, headers, spec, submits, gap)
                rows.append({"model": "resnet20.pt2", "kind": "program", "server": "restarted", **row})
                print(rows[-1]["model"], rows[-1]["server"], {k: v for k, v in row.items() if k != "times_ms"})
        finally:
            srv.stop()
    return rows, {"load_before": list(load_before), "load_after": list(os.getloadavg())}


def main(argv: Sequence[str] | None = None) -> None:
    from pruning.models import list_models

    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.submit",
        description=doc.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    p.add_argument("--models", default=",".join(list_models()), help="comma-separated zoo models (default: all)")
    p.add_argument("--submits", type=int, default=20, help="submits per model and server start")
    p.add_argument("--size", type=int, default=224, help="input size in pixels")
    p.add_argument("--port", type=int, default=18200, help="port of the server the benchmark starts")
    p.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds between submits, so that they spread over the time a trace takes (default: none)",
    )
    p.add_argument("--out", default="bench/results/submit-latency.json", help="results file")
    args = p.parse_args(argv)
    if not 1 <= args.submits <= 1000 or not 8 <= args.size <= 1024 or not 0 <= args.gap <= 10:
        p.error("--submits must be in [1, 1000], --size in [8, 1024] and --gap in [0, 10]")
    rows, loads = run([m for m in args.models.split(",") if m], args.submits, args.size, args.port, args.gap)
    record = {
        "benchmark": "submit latency: POST /v1/jobs answer time at the client",
        "goal_ms": GOAL_MS,
        "size": args.size,
        "targets": {"feasible": FEASIBLE, "infeasible": INFEASIBLE, "order": "alternating, feasible first"},
        "gap_seconds": args.gap,
        "server": "secateurs serve, SQLite, scheduler off, default trace_wait_seconds",
        **loads,
        "rows": rows,
        "worst_ms": max(r.get("max_ms", 0) for r in rows),
    }
    write_results(args.out, record, [this_call("bench.submit", argv)])
    print(f"worst submit {record['worst_ms']} ms (goal < {GOAL_MS:g} ms); written to {args.out}")


if __name__ == "__main__":
    main()
