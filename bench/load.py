"""Polling load benchmark (run by hand): what dashboard users see, and what one API process
can take, while a job keeps writing candidates, on SQLite and on PostgreSQL.

Two measurements, each over one server whose EagleEye job evaluates candidates (and writes
them to the store) the whole time:

- dashboards: N dashboard tabs (default 50), each polling once a second the way
  `service/static/js/views/job.js` does: `GET /v1/jobs/{id}`, then `candidates?after=N` and
  `events?after=N`, sending `If-None-Match` with the ETag of its last answer (a server without
  ETags ignores it). Reports per-request p50/p99/max latency and the 200/304 split.
- saturation: C closed-loop clients (default 16) repeating that cycle with no pause; the
  requests/s they get is the rate the API serves when it is the bottleneck.
- notmodified: C closed-loop clients polling the three URLs of a job that no longer changes
  (a second job, cancelled) with their ETags, while the first job keeps running: every answer
  is a 304, so the server's CPU time over the answers is the CPU time of one 304.
- storm: N dashboards opening the job page at the same instant: each sends the page's first
  requests together (`/dashboard/choices.json`, the job, every candidate and every event, on
  separate connections as a browser does), then polls once a second; reports the p99 of the
  requests sent in the first second.

    python -m bench.load                                   # both stores, every measurement
    python -m bench.load --backend both --dashboards 50 --seconds 15 \
        --out 'bench/results/load-quiet-{backend}.json' --label after   # one labelled run per store
    python -m bench.load --backend sqlite --seconds 30 --api-workers 0,2
    python -m bench.load --url http://host:8000 --token sct_... --job 7   # an existing server

With --backend the script starts `secateurs serve` itself (temporary data dir, local Ray),
submits a long job and waits until it writes candidates. `--api-workers` lists the API
servers to measure: 0 is that `secateurs serve` process itself (API and scheduler in one
process, the default deployment); N >= 1 is `uvicorn --factory service.api.app:create_app
--workers N` with the scheduler off, on the same database, next to it. The load generator is
a small keep-alive HTTP/1.1 client on asyncio (lighter than httpx, so less of the shared CPU
goes to the clients); it runs on the same machine and its CPU use is part of the figures.
The machine's load average is recorded with every row."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import this_call, write_results

LONG_JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "eagleeye", "options": {"n_samples": 100000, "top_k": 1}},
    "train": {"epochs": 0.5},
}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


class Conn:
    """One keep-alive HTTP/1.1 connection; GET only, Content-Length bodies (what the API sends)."""

    def __init__(self, url: str, token: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, etag: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """Send one GET; returns status, lower-cased headers and body. Reconnects if needed."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}{extra}\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        if "chunked" in headers.get("transfer-encoding", ""):
            raise RuntimeError("chunked responses are not handled")
        n = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(n) if n else b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    """Latencies (s) and outcomes of every request in one measurement."""

    lat: list[float] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def count(self, key: str) -> None:
        self.status[key] = self.status.get(key, 0) + 1


class Dashboard:
    """One tab on the job page: its `after` cursors and the ETag of each URL's last answer."""

    def __init__(self, conn: Conn, job_id: int) -> None:
        self.conn, self.job = conn, job_id
        self.after = {"candidates": 0, "events": 0}
        self.etags: dict[str, str] = {}

    async def _get(self, key: str, path: str, tally: Tally) -> bytes | None:
        t0 = time.perf_counter()
        try:
            status, headers, body = await self.conn.get(path, self.etags.get(key))
        except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
            tally.lat.append(time.perf_counter() - t0)
            tally.errors.append(type(exc).__name__)
            return None
        tally.lat.append(time.perf_counter() - t0)
        tally.count(str(status))
        if status == 304:
            return None
        if status != 200:
            tally.errors.append(f"HTTP {status}")
            return None
        if "etag" in headers:
            self.etags[key] = headers["etag"]
        return body

    async def tick(self, tally: Tally) -> None:
        """One poll: the job, then new candidates and new events (as the dashboard's tick)."""
        base = f"/v1/jobs/{self.job}"
        await self._get("job", base, tally)
        for what in ("candidates", "events"):
            key = f"{what}?after={self.after[what]}"
            body = await self._get(key, f"{base}/{key}&limit=1000", tally)
            if body:
                items = json.loads(body)
                if items:
                    self.after[what] = items[-1]["id"]


def summary(tally: Tally, wall: float, load: tuple[float, float]) -> dict[str, Any]:
    """Rate, latency percentiles (ms), outcomes and the load average around the run."""
    q = statistics.quantiles(tally.lat, n=100) if len(tally.lat) >= 2 else [float("nan")] * 99
    return {
        "requests": len(tally.lat),
        "rps": len(tally.lat) / wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": max(tally.lat, default=float("nan")) * 1000,
        "status": tally.status,
        "errors": len(tally.errors),
        "error_kinds": sorted(set(tally.errors)),
        "load_before": load[0],
        "load_after": os.getloadavg()[0],
        "load_5min_after": os.getloadavg()[1],
    }


async def dashboards(url: str, token: str, job_id: int, n: int, seconds: float, interval: float = 1.0) -> dict:
    """`n` dashboards, each polling once every `interval` s (starts spread over the first
    interval; a late tick is not made up with a burst)."""
    tally, load = Tally(), os.getloadavg()[0]
    start = time.monotonic()
    until = start + seconds

    async def tab() -> None:
        d = Dashboard(Conn(url, token), job_id)
        nxt = start + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if time.monotonic() >= until:
                break
            await d.tick(tally)
            nxt = max(nxt + interval, time.monotonic())
        d.conn.close()

    await asyncio.gather(*(tab() for _ in range(n)))
    return summary(tally, time.monotonic() - start, (load, 0.0)) | {"dashboards": n, "interval_s": interval}


async def saturate(url: str, token: str, job_id: int, clients: int, seconds: float) -> dict:
    """`clients` dashboards polling back to back with no pause: the served rate at saturation."""
    tally, load = Tally(), os.getloadavg()[0]
    start = time.monotonic()
    until = start + seconds

    async def loop() -> None:
        d = Dashboard(Conn(url, token), job_id)
        while time.monotonic() < until:
            await d.tick(tally)
        d.conn.close()

    await asyncio.gather(*(loop() for _ in range(clients)))
    return summary(tally, time.monotonic() - start, (load, 0.0)) | {"clients": clients}


async def not_modified(url: str, token: str, job_id: int, clients: int, seconds: float) -> dict:
    """`clients` closed-loop pollers of the three URLs of job `job_id`, which no longer changes:
    each first fetches them (the ETags, not counted), then asks back to back with `If-None-Match`."""
    tally, load = Tally(), os.getloadavg()[0]
    paths = {
        "job": f"/v1/jobs/{job_id}",
        "candidates": f"/v1/jobs/{job_id}/candidates?after=0&limit=1000",
        "events": f"/v1/jobs/{job_id}/events?after=0&limit=1000",
    }
    start = until = 0.0

    async def warm() -> Dashboard:
        d = Dashboard(Conn(url, token), job_id)
        for key, path in paths.items():
            await d._get(key, path, Tally())
        return d

    tabs = await asyncio.gather(*(warm() for _ in range(clients)))
    start = time.monotonic()
    until = start + seconds

    async def loop(d: Dashboard) -> None:
        while time.monotonic() < until:
            for key, path in paths.items():
                await d._get(key, path, tally)
        d.conn.close()

    await asyncio.gather(*(loop(d) for d in tabs))
    return summary(tally, time.monotonic() - start, (load, 0.0)) | {"clients": clients, "job": job_id}


async def storm(
    url: str,
    token: str,
    job_id: int,
    n: int,
    seconds: float,
    interval: float = 1.0,
    server_cpu: Callable[[], float] | None = None,
) -> dict:
    """`n` dashboards opening the job page at the same instant. Each sends the page's first
    requests together, on four connections as a browser does: the form's choices, the job,
    every candidate and every event (pages of 1000, as the page drains them); then it polls
    once a second on one connection. Latency of the requests sent in the first second, and
    of the page's first requests by kind; the burst of first requests' wall time and the CPU
    time this client and (with `server_cpu`, seconds so far) the server spent on it."""
    first, later, load = Tally(), Tally(), os.getloadavg()[0]
    kinds: dict[str, list[float]] = {}
    conns: list[Conn] = []
    start = time.monotonic()
    until = start + seconds
    client0, server0 = time.process_time(), server_cpu() if server_cpu else 0.0
    burst: dict[str, float] = {}
    pending = [n]

    async def timed(kind: str, request: Awaitable[Any]) -> None:
        t0 = time.perf_counter()
        await request
        kinds.setdefault(kind, []).append(time.perf_counter() - t0)

    async def drain(d: Dashboard, what: str, tally: Tally) -> None:
        while True:
            key = f"{what}?after={d.after[what]}"
            body = await d._get(key, f"/v1/jobs/{job_id}/{key}&limit=1000", tally)
            items = json.loads(body) if body else []
            if items:
                d.after[what] = items[-1]["id"]
            if len(items) < 1000:
                return

    async def tab() -> None:
        side = [Conn(url, token) for _ in range(3)]
        conns.extend(side)
        d = Dashboard(Conn(url, token), job_id)
        conns.append(d.conn)
        choices = Dashboard(side[0], job_id)
        await asyncio.gather(
            timed("choices", choices._get("choices", "/dashboard/choices.json", first)),
            timed("job", d._get("job", f"/v1/jobs/{job_id}", first)),
            timed("candidates", drain(Dashboard(side[1], job_id), "candidates", first)),
            timed("events", drain(Dashboard(side[2], job_id), "events", first)),
        )
        pending[0] -= 1
        if not pending[0]:  # the last page has its first answers
            burst["wall_ms"] = 1000 * (time.monotonic() - start)
            burst["client_cpu_ms"] = 1000 * (time.process_time() - client0)
            if server_cpu:
                burst["server_cpu_ms"] = 1000 * (server_cpu() - server0)
        # the page goes on from where its first load left off
        nxt = start + interval
        while True:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if time.monotonic() >= until:
                break
            await d.tick(later if time.monotonic() - start >= interval else first)
            nxt = max(nxt + interval, time.monotonic())

    await asyncio.gather(*(tab() for _ in range(n)))
    wall = time.monotonic() - start
    for c in conns:
        c.close()
    everything = Tally(first.lat + later.lat, {}, first.errors + later.errors)
    for t in (first, later):
        for k, v in t.status.items():
            everything.status[k] = everything.status.get(k, 0) + v
    return {
        "dashboards": n,
        "first_second": summary(first, interval, (load, 0.0)),
        "first_requests": burst
        | {
            f"{kind}_ms": {"p50": 1000 * statistics.median(lat), "max": 1000 * max(lat)}
            for kind, lat in sorted(kinds.items())
        },
        "whole": summary(everything, wall, (load, 0.0)),
        "seconds": seconds,
    }


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of these processes (all their threads), from /proc."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes together."""
    return sum(cpu_by_pid(pids).values())


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (uvicorn's workers)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return [pid, *kids]


def measure_all(
    url: str,
    token: str,
    job_id: int,
    args: argparse.Namespace,
    pids: list[int] | None = None,
    still_job: int | None = None,
) -> dict:
    """The measurements `args.measure` names against one API server (`still_job`: a job that no
    longer changes, for the 304-only measurement); with the server's `pids`, also its CPU time
    per request (less sensitive to the machine's load than latency)."""
    out: dict[str, Any] = {}
    if pids:  # what the server spends with no request at all (its scheduler, Ray's driver threads)
        cpu0 = cpu_seconds(pids)
        time.sleep(IDLE_SECONDS)
        out["idle_server_cpu_ms_per_s"] = 1000 * (cpu_seconds(pids) - cpu0) / IDLE_SECONDS
    for kind in MEASURES:
        if kind not in args.measure:
            continue
        if kind == "notmodified" and still_job is None:
            continue
        db0 = cpu_by_pid(database_pids()) if getattr(args, "postgres_cpu", False) else {}
        cpu0 = cpu_seconds(pids or [])
        if kind == "dashboards":
            out[kind] = asyncio.run(dashboards(url, token, job_id, args.dashboards, args.seconds))
        elif kind == "saturation":
            out[kind] = asyncio.run(saturate(url, token, job_id, args.clients, args.seconds))
        elif kind == "notmodified":
            assert still_job is not None
            out[kind] = asyncio.run(not_modified(url, token, still_job, args.clients, args.seconds))
        else:
            cpu = partial(cpu_seconds, pids) if pids else None
            out[kind] = asyncio.run(storm(url, token, job_id, args.dashboards, args.storm_seconds, server_cpu=cpu))
        requests = out[kind]["requests"] if "requests" in out[kind] else out[kind]["whole"]["requests"]
        if pids:
            out[kind]["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(pids) - cpu0) / max(1, requests)
        if db0:  # PostgreSQL's own processes (all its work; a connection that closed during the phase is lost)
            db1 = cpu_by_pid(database_pids())
            spent = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
            out[kind]["database_cpu_ms_per_request"] = 1000 * spent / max(1, requests)
    return out


MEASURES = ("dashboards", "saturation", "notmodified", "storm")
IDLE_SECONDS = 5.0


def database_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (read for PostgreSQL runs only)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError):
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
    return pids


@contextlib.contextmanager
def api_workers(env: dict[str, str], workers: int, log: Path):
    """`uvicorn --workers N` on the app factory, scheduler off; yields its URL."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            cmd, env={**env, "SECATEURS_SCHEDULER": "false"}, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn --workers {workers} did not start: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        time.sleep(2 * workers)  # let every worker finish its start-up
        yield url, with_children(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)


def run_backend(backend: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start a server on `backend`, submit the long job, measure each API server, stop all."""
    from service.client import Client
    from service.devserver import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix=f"secateurs-load-{backend}-"))
    schema = None
    url = None
    if backend == "postgresql":
        import psycopg

        schema = f"load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    # the service's own defaults for the scheduler's pass and the heartbeat (the dev server's are faster)
    srv = ServerProcess(
        tmp / "data",
        url,
        SECATEURS_STALE_AFTER_SECONDS="60",
        SECATEURS_POLL_SECONDS="1",
        SECATEURS_HEARTBEAT_SECONDS="5",
        SECATEURS_EVAL_WORKERS="2",
    )
    rows = []
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
        still = still_job(client) if "notmodified" in args.measure else None
        args.postgres_cpu = backend == "postgresql"
        for workers in args.api_workers:
            before = client.job(job["id"])["candidates_evaluated"]
            if workers == 0:
                assert srv.proc is not None
                res = measure_all(srv.url, token, job["id"], args, [srv.proc.pid], still)
            else:
                with api_workers(srv.env, workers, tmp / f"uvicorn-{workers}.log") as (api_url, pids):
                    res = measure_all(api_url, token, job["id"], args, pids, still)
            written = client.job(job["id"])["candidates_evaluated"] - before
            rows.append(
                {
                    "store": backend,
                    "api_workers": workers,
                    "candidates_before": before,
                    "candidates_written": written,
                    **res,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        client.cancel(job["id"])
        return rows
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def still_job(client: Any) -> int:
    """A second job, cancelled at once (if the scheduler took it, cancelled within seconds): a
    job whose answers no longer change, for the 304-only measurement."""
    job = client.submit(LONG_JOB)
    client.cancel(job["id"])
    deadline = time.monotonic() + 60
    while client.job(job["id"])["status"] not in ("cancelled", "failed", "succeeded"):
        if time.monotonic() > deadline:
            raise SystemExit("the second job did not stop")
        time.sleep(0.5)
    return int(job["id"])


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    out = [
        "| store | API server | measured | req/s | p50 ms | p99 ms | max ms | 200/304 | errors | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        server = "serve (API + scheduler)" if r["api_workers"] == 0 else f"uvicorn --workers {r['api_workers']}"
        for kind in MEASURES:
            if kind not in r:
                continue
            s = r[kind] if kind != "storm" else r[kind]["first_second"] | r[kind]
            what = {
                "dashboards": f"{s.get('dashboards')} dashboards, 1/s",
                "saturation": f"saturation, {s.get('clients')} clients",
                "notmodified": f"304 only, {s.get('clients')} clients",
                "storm": f"start-up storm, {s.get('dashboards')} dashboards, first second",
            }[kind]
            codes = f"{s['status'].get('200', 0)}/{s['status'].get('304', 0)}"
            out.append(
                f"| {r['store']} | {server} | {what} | {s['rps']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                f"{s['max_ms']:.0f} | {codes} | {s['errors']} | {s.get('server_cpu_ms_per_request', float('nan')):.2f} "
                f"| {s['load_before']:.1f}-{s['load_after']:.1f} |"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--url", help="poll an existing server instead (with --token and --job)")
    ap.add_argument("--token")
    ap.add_argument("--job", type=int)
    ap.add_argument("--measure", default=",".join(MEASURES), help=f"comma-separated, of: {', '.join(MEASURES)}")
    ap.add_argument("--dashboards", type=int, default=50, help="dashboard tabs polling once a second")
    ap.add_argument("--clients", type=int, default=16, help="closed-loop clients for the saturation rate")
    ap.add_argument("--api-workers", default="0", help="comma-separated API servers to measure (0: serve itself)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each measurement")
    ap.add_argument("--storm-seconds", type=float, default=5.0, help="length of the start-up storm measurement")
    ap.add_argument(
        "--out",
        help="also write the rows as JSON here; {backend} in the name: one file per store, and "
        "with --label the file keeps one entry per label (earlier labels stay)",
    )
    ap.add_argument("--label", help="name of this run in the --out file (e.g. before, after)")
    args = ap.parse_args()
    args.measure = {m.strip() for m in args.measure.split(",") if m.strip()}
    args.api_workers = [int(w) for w in args.api_workers.split(",")]
    if not args.measure <= set(MEASURES):
        ap.error(f"--measure: choose from {', '.join(MEASURES)}")
    call = this_call("bench.load", None) | {"label": args.label}  # the commit the servers start from
    if args.url:
        if not (args.token and args.job):
            ap.error("--url needs --token and --job")
        url, token, job = args.url, args.token, args.job
        runs = {
            "server": run_measured(
                lambda: [{"store": "server", "api_workers": 0, **measure_all(url, token, job, args)}]
            )
        }
    else:
        backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        runs = {b: run_measured(lambda b=b: run_backend(b, args)) for b in backends}
    for backend, run in runs.items():
        if args.out:
            save(Path(args.out.replace("{backend}", backend)), args.label, run, call)
        print(table(run["rows"]))
    return 0


def run_measured(measure: Any) -> dict[str, Any]:
    """`measure()`'s rows with `uptime` (the load average) just before and just after."""
    before = _uptime()
    rows = measure()
    return {
        "argv": sys.argv[1:],
        "cpus": os.cpu_count(),
        "git": _git_head(),
        "uptime_before": before,
        "uptime_after": _uptime(),
        "rows": rows,
    }


def save(path: Path, label: str | None, run: dict[str, Any], call: dict[str, Any]) -> None:
    """Write `run` (made by `call`) to `path`; with `label`, as that entry of the file's `runs`
    (the other labels' entries and every earlier call stay)."""
    from bench.common import previous_calls

    if label is None:
        write_results(path, run, [call])
        return
    saved = json.loads(path.read_text()) if path.exists() else {}
    runs = dict(saved.get("runs", {})) | {label: run | {"command": call["command"]}}
    write_results(path, {"runs": runs}, [*previous_calls(path), call])


def _uptime() -> str:
    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


def _git_head() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
