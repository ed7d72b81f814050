"""Job commands against a running server: `submit`, `jobs`, `status`, `watch` (live tqdm
bar), `cancel`, `fetch`, `upload`, and `datasets upload|list` (image folder archives for
`data: {upload: ID}`). Server and token from `--url`/`--token` or
`SECATEURS_URL`/`SECATEURS_TOKEN`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from workers.status import FINAL, JobStatus

from .common import CliError, emit_json, progress_bar


def _client(args: argparse.Namespace):
    from service.client import Client

    return Client(args.url, args.token)


def read_spec(path: str) -> dict[str, Any]:
    """A job spec from a YAML or JSON file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CliError(f"{p} does not exist")
    try:
        spec = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CliError(f"cannot parse {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(spec, dict):
        raise CliError(f"{p} must hold a mapping (the job spec)")
    return spec


def _line(job: dict[str, Any]) -> str:
    best = job.get("best") or {}
    score = f" best={best['score']:.4f}" if "score" in best else ""
    return (
        f"{job['id']:>5}  {job['status']:<9}  {job['progress'] * 100:5.1f}%  {job['candidates_evaluated']:>4} cand"
        f"{score}  {job['phase']}"
    )


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.submit(read_spec(args.spec))
    print(f"submitted job {job['id']}", file=sys.stderr)
    emit_json({"id": job["id"], "status": job["status"]}) if args.json else print(job["id"])
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        page = c.jobs(args.status, args.limit, args.offset)
    if args.json:
        emit_json(page)
        return 0
    for job in page["items"]:
        print(_line(job))
    print(f"({len(page['items'])} of {page['total']})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.job(args.id)
    if args.json:
        emit_json(job)
        return 0
    print(_line(job))
    if job.get("error"):
        print(f"error: {job['error']}")
    if job.get("summary"):
        s = job["summary"]
        for key in (
            "accuracy_before",
            "accuracy_after",
            "flops_before",
            "flops_after",
            "params_before",
            "params_after",
            "latency_ms_before",
            "latency_ms_after",
            "runtime",
        ):
            if key in s:
                print(f"  {key:<18} {s[key]}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a job with a live progress bar until it ends; exit 1 if it failed."""
    with _client(args) as c:
        bar = progress_bar(100, f"job {args.id}", unit="%")
        job: dict[str, Any] = {}
        try:
            for job in c.follow(args.id, poll=args.poll):
                bar.n = round(job["progress"] * 100, 1)
                best = job.get("best") or {}
                bar.set_postfix_str(
                    f"{job['status']} | {job['phase'][:40]} | {job['candidates_evaluated']} cand"
                    + (f" | best {best['score']:.4f}" if "score" in best else ""),
                    refresh=False,
                )
                bar.refresh()
        finally:
            bar.close()
    print(_line(job))
    if job["status"] == JobStatus.FAILED:
        print(f"error: {job.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.cancel(args.id)
        if args.wait:
            deadline = time.monotonic() + 60
            while job["status"] not in FINAL and time.monotonic() < deadline:
                time.sleep(0.5)
                job = c.job(args.id)
    print(_line(job))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    out = Path(args.out or f"job-{args.id}")
    with _client(args) as c:
        paths = c.download(args.id, out)
    if not paths:
        raise CliError(f"job {args.id} has no artifacts (is it finished?)")
    for p in paths:
        print(p)
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    try:
        model_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise CliError(f"--args is not valid JSON: {exc.msg}") from exc
    if args.zoo is None and not args.file.lower().endswith(".pt2"):
        raise CliError("--zoo is required with a weights file (a .pt2 program carries its architecture)")
    with _client(args) as c:
        m = c.upload_model(args.file, args.zoo, model_args)
    print(f"uploaded model {m['id']} ({m['size']:,} bytes, sha256 {m['sha256'][:12]}...)", file=sys.stderr)
    emit_json(m) if args.json else print(m["id"])
    return 0


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with _client(args) as c:
        d = c.upload_dataset(args.file)
    images = ", ".join(f"{n:,} {split}" for split, n in d["images"].items())
    kind = f"{d['task']} set, " if d.get("task", "classification") != "classification" else ""
    b = d.get("boxes")  # a detection set: what reading its labels counted
    boxes = (
        f"; {b['format'].upper()} labels: {b['objects']:,} objects ({b['clipped']} clipped to their image, "
        f"{b['skipped_empty']} empty and {b['skipped_crowd']} crowd boxes skipped)"
        if b
        else ""
    )
    print(
        f"uploaded data set {d['id']}: {kind}{d['num_classes']} classes, {d['in_channels']} channel(s), "
        f"images: {images}{boxes}",
        file=sys.stderr,
    )
    emit_json(d) if args.json else print(d["id"])
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        items = c.datasets()
    if args.json:
        emit_json(items)
        return 0
    for d in items:
        n = sum(d["images"].values())
        print(f"{d['id']:>5}  {d['num_classes']:>4} classes  {d['in_channels']} ch  {n:>7,} images  {d['filename']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the job commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="API base URL (default SECATEURS_URL or http://127.0.0.1:8000)")
    common.add_argument("--token", default=None, help="team token (default SECATEURS_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help_, parents=[common])
        p.set_defaults(func=func)
        return p

    add("submit", cmd_submit, "submit a job spec (YAML or JSON); prints the job id").add_argument("spec")
    p = add("jobs", cmd_jobs, "list your team's jobs")
    p.add_argument("--status", choices=[s.value for s in JobStatus])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    add("status", cmd_status, "show one job").add_argument("id", type=int)
    p = add("watch", cmd_watch, "follow a job with a live progress bar")
    p.add_argument("id", type=int)
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    p = add("cancel", cmd_cancel, "cancel a job")
    p.add_argument("id", type=int)
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    p = add("fetch", cmd_fetch, "download a finished job's artifacts")
    p.add_argument("id", type=int)
    p.add_argument("--out", default=None, help="folder (default job-ID)")
    datasets = subparsers.add_parser(
        "datasets", help="upload or list image folder archives (use one in a job as data: {upload: ID})"
    ).add_subparsers(dest="datasets_command", metavar="COMMAND", required=True)
    p = datasets.add_parser(
        "upload", parents=[common], help="upload a .tar, .tar.gz or .zip of <class>/* or train/<class>/* (+ val/)"
    )
    p.add_argument("file")
    p.set_defaults(func=cmd_datasets_upload)
    datasets.add_parser("list", parents=[common], help="list your team's data sets").set_defaults(
        func=cmd_datasets_list
    )
    p = add(
        "upload",
        cmd_upload,
        "upload weights (safetensors or weights-only .pt) or a torch.export program (.pt2); prints the model id",
    )
    p.add_argument("file")
    p.add_argument("--zoo", default=None, help="zoo architecture of the weights (none with a .pt2 program)")
    p.add_argument(
        "--args", default="{}", help="JSON object of the zoo model's arguments (num_classes, in_channels, ...)"
    )
