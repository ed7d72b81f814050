"""Load benchmark (run by hand): 50 concurrent pollers against a running job for 30 s, the
way dashboards and `secateurs watch` poll (`GET /v1/jobs/{id}` and `candidates?after=N`),
reporting requests/s, p50/p99 latency and errors, on SQLite and on PostgreSQL.

    .venv/bin/python bench/load.py                         # both backends, own servers
    .venv/bin/python bench/load.py --backend sqlite --pollers 50 --seconds 30
    .venv/bin/python bench/load.py --url http://host:8000 --token sct_... --job 7   # an existing server

With --backend, the script starts `secateurs serve` itself (temporary data dir, local Ray),
submits a long EagleEye job on digits, waits until it is running, then polls; the job keeps
evaluating candidates (writing to the store) during the whole measurement."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

LONG_JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "eagleeye", "options": {"n_samples": 100000, "top_k": 1}},
    "train": {"epochs": 0.5},
}


async def poller(client: httpx.AsyncClient, job_id: int, until: float, lat: list[float], errors: list[str]) -> None:
    """Poll the job and its new candidates until `until`, like a dashboard tab."""
    after = 0
    while time.monotonic() < until:
        for path, params in ((f"/v1/jobs/{job_id}", None), (f"/v1/jobs/{job_id}/candidates", {"after": after})):
            t0 = time.perf_counter()
            try:
                r = await client.get(path, params=params)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}")
                elif params is not None and r.json():
                    after = r.json()[-1]["id"]
            except httpx.HTTPError as exc:
                lat.append(time.perf_counter() - t0)
                errors.append(type(exc).__name__)
        await asyncio.sleep(0.05)


async def measure(url: str, token: str, job_id: int, pollers: int, seconds: float) -> dict:
    """Run the pollers; returns requests, rate, p50/p99 (ms) and errors."""
    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as c:
        start = time.monotonic()
        until = start + seconds
        await asyncio.gather(*(poller(c, job_id, until, lat, errors) for _ in range(pollers)))
        wall = time.monotonic() - start
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


def run_backend(backend: str, pollers: int, seconds: float) -> dict:
    """Start a server on `backend`, submit the long job, measure, stop everything."""
    from service.client import Client
    from service.devserver import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix=f"secateurs-load-{backend}-"))
    schema = None
    url = None
    if backend == "postgresql":
        import psycopg

        schema = f"load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    srv = ServerProcess(tmp / "data", url, SECATEURS_STALE_AFTER_SECONDS="60")
    try:
        srv.start()
        token = srv.cli("token", "create", "--team", "load").stdout.strip().splitlines()[-1]
        client = Client(srv.url, token)
        job = client.submit(LONG_JOB)
        deadline = time.monotonic() + 300
        while client.job(job["id"])["candidates_evaluated"] < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the load job never started evaluating")
            time.sleep(1)
        stats = asyncio.run(measure(srv.url, token, job["id"], pollers, seconds))
        stats["candidates_during"] = client.job(job["id"])["candidates_evaluated"]
        client.cancel(job["id"])
        return stats
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--url", help="poll an existing server instead (with --token and --job)")
    ap.add_argument("--token")
    ap.add_argument("--job", type=int)
    ap.add_argument("--pollers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    rows = []
    if args.url:
        if not (args.token and args.job):
            ap.error("--url needs --token and --job")
        rows.append(("server", asyncio.run(measure(args.url, args.token, args.job, args.pollers, args.seconds))))
    else:
        backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        rows.extend((backend, run_backend(backend, args.pollers, args.seconds)) for backend in backends)
    print("| store | pollers | seconds | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        print(
            f"| {name} | {args.pollers} | {args.seconds:g} | {s['requests']} | {s['rps']:.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {s['errors']}{' ' + ','.join(s['error_kinds']) if s['errors'] else ''} |"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
