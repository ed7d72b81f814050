"""Full-size networks through the REST path with every default: torchvision's VGG-11-BN, AlexNet and
Wide ResNet-50-2 (tests/corpus/fullsize.py, 10 classes, 224 px) exported to `.pt2`, uploaded to
a real server (`POST /v1/models`) and pruned by a job that sets only what the service requires.

Run by hand:  python -m bench.fullsize [--names tv_alexnet] [--watch 900] [--port 18300]
              [--train-per-class 20 --test-per-class 10] [--out bench/results/fullsize-rest.json]

The data set is an image folder archive (`train/<class>/`, `test/<class>/`, RGB PNG at 224 px)
made from the first Fashion-MNIST images of each class, uploaded with `POST /v1/datasets`. The
job is the documented minimal body, `{model: {upload}, data: {upload}, target: {flops: 0.5},
strategy: {name: uniform}}`: every other field (fine-tune budget, batch size, input size from
the program) is its default. A job not final after `--watch` seconds is cancelled; its row keeps
the events it reached (each stamped with the seconds since submit at which it was first seen),
so a run on a slow machine still says how far it got and how fast each phase went.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, this_call, write_results
from pruning.export import export_program
from search.space import SearchSpace
from service.client import Client
from service.devserver import ServerProcess
from tests.corpus import FULL_SIZE, FULL_SIZE_INPUT, build, search_cut  # the corpus lives with the tests

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def _idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as an array."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_archive(dest: Path, size: int, train_per_class: int, test_per_class: int) -> dict[str, int]:
    """Write a `.tar.gz` image folder of the first Fashion-MNIST images per class, resized to
    `size` px RGB PNG; returns the image count per split."""
    counts = {"train": 0, "test": 0}
    with tarfile.open(dest, "w:gz") as tar:
        for split, prefix, per_class in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
            images = _idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")
            labels = _idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
            for k, cls in enumerate(CLASSES):
                for j, i in enumerate(np.flatnonzero(labels == k)[:per_class]):
                    img = Image.fromarray(images[i]).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{j:04d}.png")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                    counts[split] += 1
    return counts


def watch(
    client: Client, job_id: int, seconds: float, after: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], float]:
    """Poll the job until it is final or `seconds` pass; returns the last job, its events after
    id `after` (each with `seen_s`, seconds since this call at which it was first seen), the
    job's (phase, progress) each time it changed, with `seen_s`, and the seconds waited."""
    t0, last = time.monotonic(), after
    events: list[dict[str, Any]] = []
    trace: list[dict[str, Any]] = []
    while True:
        job = client.job(job_id)
        seen = round(time.monotonic() - t0, 1)
        if not trace or (trace[-1]["phase"], trace[-1]["progress"]) != (job.get("phase"), job.get("progress")):
            trace.append({"seen_s": seen, "phase": job.get("phase"), "progress": job.get("progress")})
        for e in client.events(job_id, after=last) or []:
            events.append({**e, "seen_s": seen})
            last = max(last, int(e.get("id", last)))
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() - t0 > seconds:
            return job, events, trace, time.monotonic() - t0
        time.sleep(2)


def run_network(client: Client, name: str, dataset_id: int, work: Path, watch_s: float) -> dict[str, Any]:
    """One network's row: export, upload, submit, and what the job did within `watch_s` seconds."""
    row: dict[str, Any] = {"name": name, "family": FULL_SIZE[name].family}
    model = build(name)
    row["params"] = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    path = export_program(model, work / f"{name}.pt2", FULL_SIZE_INPUT)
    row["export_s"] = time.perf_counter() - t
    row["pt2_bytes"] = os.path.getsize(path)
    del model
    t = time.perf_counter()
    uploaded = client.upload_model(path, timeout=1800)
    row["upload_s"] = time.perf_counter() - t
    row["upload"] = uploaded
    spec = {
        "model": {"upload": uploaded["id"]},
        "data": {"upload": dataset_id},
        "target": {"flops": 0.5},
        "strategy": {"name": "uniform"},
    }
    row["spec"] = spec
    t = time.perf_counter()
    job = client.submit(spec)
    row["submit_s"] = time.perf_counter() - t
    row["submit_answer"] = {k: job.get(k) for k in ("id", "status", "spec")}
    job, events, trace, waited = watch(client, job["id"], watch_s)
    row["watched_s"] = waited
    row["status"] = job["status"]
    row["finished"] = job["status"] == "succeeded"
    row["summary"] = job.get("summary")
    row["job"] = job
    row["events"] = events
    row["progress_trace"] = trace
    if job["status"] not in ("succeeded", "failed", "cancelled"):
        client.cancel(job["id"])
        final, more, _, _ = watch(client, job["id"], 120, after=max((e["id"] for e in events), default=0))
        row["status_after_cancel"] = final["status"]
        row["events"] += more
    row["wall_s"] = (
        row["export_s"] + row["upload_s"] + row["submit_s"] + waited
    )  # export + upload + submit + the job (or the watch)
    return row


def main(argv: list[str] | None = None) -> int:
    """Start a server, upload the data set and each network, run the jobs one after another and
    write the rows as JSON (--out)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=list(FULL_SIZE))
    ap.add_argument(
        "--watch",
        nargs="*",
        type=float,
        default=[900],
        help="seconds to follow each job before cancelling it (one value for all, or one per name)",
    )
    ap.add_argument("--port", type=int, default=None, help="the server's port (default: a free one)")
    ap.add_argument("--train-per-class", type=int, default=20)
    ap.add_argument("--test-per-class", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / "fullsize-rest.json"))
    ap.add_argument("--table", type=Path, help="print the Markdown table of this results file and stop")
    ap.add_argument(
        "--step-times",
        type=int,
        metavar="STEPS",
        help="time STEPS fine-tune steps per network in process instead (batch 64, the job's default; rows to --out)",
    )
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    if args.step_times:
        load = os.getloadavg()[0]
        steps = []
        for name in args.names:
            steps.append(step_seconds(name, 64, args.step_times))
            print(steps[-1], flush=True)
            record = {
                "config": vars(args),
                "load_average": load,
                "load_average_now": os.getloadavg()[0],
                "niceness": os.nice(0),
                "threads": torch.get_num_threads(),
                "rows": steps,
            }
            write_results(args.out, record, [this_call("bench.fullsize", argv)])
        return 0
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fullsize-") as tmp:
        work = Path(tmp)
        archive = work / "fashion-224.tar.gz"
        counts = fashion_archive(archive, FULL_SIZE_INPUT[-1], args.train_per_class, args.test_per_class)
        srv = ServerProcess(
            work / "data", port=args.port, SECATEURS_STALE_AFTER_SECONDS="600", SECATEURS_EVAL_WORKERS="2"
        )
        try:
            srv.start()
            token = srv.cli("token", "create", "--team", "fullsize").stdout.strip().splitlines()[-1]
            client = Client(srv.url, token)
            limits = client._call("GET", "/v1/me").json().get("limits")
            dataset = client.upload_dataset(archive)
            watches = args.watch if len(args.watch) == len(args.names) else [args.watch[0]] * len(args.names)
            for name, watch_s in zip(args.names, watches, strict=True):
                rows.append(run_network(client, name, dataset["id"], work, watch_s))
                print(_line(rows[-1]), flush=True)
                if args.out:  # every row so far, should a later network stop the run
                    _write(args, argv, load, counts, archive, limits, dataset, rows)
        finally:
            srv.stop()
    return 0


def _write(
    args: argparse.Namespace,
    argv: list[str] | None,
    load: float,
    counts: dict[str, int],
    archive: Path,
    limits: Any,
    dataset: dict[str, Any],
    rows: list[dict[str, Any]],
) -> None:
    record = {
        "config": vars(args),
        "load_average": load,
        "load_average_now": os.getloadavg()[0],
        "niceness": os.nice(0),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": {"images": counts, "archive_bytes": archive.stat().st_size, "dataset": dataset},
        "limits": limits,
        "rows": rows,
    }
    write_results(args.out, record, [this_call("bench.fullsize", argv)])


def step_seconds(name: str, batch: int, steps: int) -> dict[str, Any]:
    """Seconds per fine-tune step (forward, backward, SGD with momentum) at `batch` images of
    224 px on `name` cut as the job's default cuts it (uniform to half the FLOPs, chosen in
    process by `tests.corpus.search_cut`); one warm-up step, then the median of `steps`."""
    model = build(name)
    space = SearchSpace(model, FULL_SIZE_INPUT, "flops=0.5")
    best, cut = search_cut(model, space, "uniform")
    del model
    cut.train()
    opt = torch.optim.SGD(cut.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(batch, *FULL_SIZE_INPUT), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(cut(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return {
        "name": name,
        "batch": batch,
        "flops": best.flops,
        "step_s": times[1:],
        "median_s": statistics.median(times[1:]),
    }


def phase_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds each job phase lasted, from the server's event times (a phase ends where the
    next phase, or the job's end, begins; a phase still running at the last event is left out)."""
    marks = [
        (e["data"].get("phase") if e["kind"] == "phase" else e["kind"], datetime.fromisoformat(e["created_at"]))
        for e in events
        if e["kind"] in ("phase", "succeeded", "failed", "cancel", "cancelled")
    ]
    return {a: (tb - ta).total_seconds() for (a, ta), (_, tb) in itertools.pairwise(marks) if a != "cancel"}


def validation_intervals(trace: list[dict[str, Any]]) -> list[float]:
    """Seconds between the fine-tune's progress reports (one per validation, every `eval_every`
    steps), from the watch's samples: the fine-tune's time per `eval_every` steps."""
    tune = [t["seen_s"] for t in trace if t["phase"] == "finetune"]
    return [round(b - a, 1) for a, b in itertools.pairwise(tune)]


def table(path: Path) -> str:
    """The Markdown table of a results file's rows (what docs/results/corpus.md shows)."""
    rows = json.loads(path.read_text())["rows"]
    head = (
        "| network | .pt2 | upload | submit | job | data | search | fine-tune (s per validation) "
        "| FLOPs before → after | accuracy before → after |"
    )
    out = [head, "|---|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for r in rows:
        ph, s = phase_seconds(r["events"]), r.get("summary") or {}
        secs = {k: f"{ph[k]:.0f} s" if k in ph else "—" for k in ("data", "search")}
        tune = ", ".join(f"{t:.0f}" for t in validation_intervals(r["progress_trace"])) or "—"
        flops = f"{s['flops_before'] / 1e9:.2f} G → {s['flops_after'] / 1e9:.2f} G" if s else "—"
        acc = f"{s['accuracy_before']:.2f} → {s['accuracy_after']:.2f}" if s else "—"
        job = (
            f"{r['status']} in {r['watched_s']:.0f} s"
            if r["finished"]
            else f"cancelled after {r['watched_s']:.0f} s in {r['job'].get('phase')}"
        )
        out.append(
            f"| {r['family']} | {r['pt2_bytes'] / 1e6:.0f} MB | {r['upload_s']:.1f} s | {r['submit_s']:.2f} s "
            f"| {job} | {secs['data']} | {secs['search']} | {tune} | {flops} | {acc} |"
        )
    return "\n".join(out)


def _line(r: dict[str, Any]) -> str:
    s = r["job"].get("summary") or {}
    return (
        f"{r['name']}: {r['pt2_bytes'] / 1e6:.0f} MB, upload {r['upload_s']:.1f} s, submit {r['submit_s']:.1f} s, "
        f"status {r['status']} after {r['watched_s']:.0f} s, acc {s.get('accuracy_before')} -> "
        f"{s.get('accuracy_after')}, flops {s.get('flops_before')} -> {s.get('flops_after')}"
    )


if __name__ == "__main__":
    sys.exit(main())
