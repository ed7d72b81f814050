"""One run of a job as a Ray task: `run_pipeline` with a `RelaySink` (reports go back to the
scheduler through the relay actor; no database here) and candidate evaluation fanned out to
Ray actors. Returns the outcome: the summary and the artifacts, or the error and its
traceback; the scheduler records it."""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.evaluators import Evaluator

from .feasibility import Refused
from .relay import RelaySink
from .sink import ResumeState, result_from_dict
from .status import JobStatus

RESUME_ONLY = {"checkpoint.pt", "checkpoint.pt.tmp", "candidates.jsonl", "events.jsonl"}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def collect_artifacts(out_dir: Path) -> list[dict[str, Any]]:
    """Every output file except resume-only state, with size and checksum."""
    return [
        {"name": p.relative_to(out_dir).as_posix(), "path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name not in RESUME_ONLY
    ]


def public_summary(summary: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """The summary without server paths: files named as their artifacts."""
    out = {k: v for k, v in summary.items() if k != "out_dir"}
    files = summary.get("files") or {}
    out["files"] = {
        k: Path(v).relative_to(out_dir).as_posix() if Path(v).is_relative_to(out_dir) else Path(v).name
        for k, v in files.items()
    }
    return out


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (the job's error as the API shows it); a feasibility
    refusal (`workers.feasibility.Refused`) as the line a submit's 422 gives for the same spec."""
    if isinstance(exc, Refused):
        return exc.line
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run_job(
    config: dict[str, Any],
    out_dir: str,
    relay: Any,
    resume: dict[str, Any] | None = None,
    eval_workers: int = 2,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) one job; returns `{"status": JobStatus (succeeded, cancelled or failed), ...}`.
    `cache_dir` keeps trained base models across jobs (`run_pipeline`)."""
    from .executor import RayExecutor
    from .pipeline import run_pipeline

    sink = RelaySink(relay)
    out = Path(out_dir)
    executors: list[RayExecutor] = []

    def executor_factory(evaluator: Evaluator) -> RayExecutor:
        ex = RayExecutor(evaluator, dict((config.get("evaluator") or {}).get("options") or {}), eval_workers)
        executors.append(ex)
        return ex

    state = None
    if resume is not None:
        state = ResumeState(strategy=resume["strategy"], results=[result_from_dict(r) for r in resume["results"]])
    try:
        summary = run_pipeline(config, out, sink, resume=state, executor_factory=executor_factory, cache_dir=cache_dir)
        if summary.get("status") == "stopped":
            return {"status": JobStatus.CANCELLED, "summary": public_summary(summary, out)}
        return {
            "status": JobStatus.SUCCEEDED,
            "summary": public_summary(summary, out),
            "artifacts": collect_artifacts(out),
        }
    except Exception as exc:  # noqa: BLE001 - every failure is recorded for the API
        return {"status": JobStatus.FAILED, "error": one_line(exc), "traceback": traceback.format_exc()}
    finally:
        for ex in executors:
            ex.close()
        sink.flush()
