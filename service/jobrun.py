"""One run of a job, executed as a Ray task: runs `search.pipeline.run_pipeline` with hooks
that write every candidate, event, progress update and strategy checkpoint to the store as
they happen, heartbeats from a side thread, stops when a cancel is requested, and on a
resume hands the pipeline the saved strategy state plus every stored candidate so nothing
is evaluated twice. Ends by recording the artifacts and the summary, or the error and its
traceback."""
from __future__ import annotations

import hashlib
import io
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import Settings
from .store import LeaseLost, Store

PROGRESS_EVERY = 0.5  # seconds between progress writes (phase changes are written at once)
# The job's overall progress: each pipeline phase maps its own 0-1 fraction onto a span.
PHASE_SPANS = {"data": (0.0, 0.02), "train": (0.02, 0.2), "search": (0.2, 0.85), "finetune": (0.85, 0.97),
               "export": (0.97, 0.99), "done": (0.99, 0.99)}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def collect_artifacts(out_dir: Path) -> list[dict[str, Any]]:
    """Every output file except resume-only state, with size and checksum."""
    skip = {"checkpoint.pt", "checkpoint.pt.tmp"}
    return [{"name": p.relative_to(out_dir).as_posix(), "path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name not in skip]


class JobHooks:
    """Pipeline hooks bound to one job run (see `search.pipeline.PipelineHooks`)."""

    def __init__(self, store: Store, job_id: int, lease: str, settings: Settings, evaluator_options: dict[str, Any]) -> None:
        self.store, self.job_id, self.lease, self.settings = store, job_id, lease, settings
        self.evaluator_options = evaluator_options
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.executor: Any = None
        self._phase = ""
        self._last_progress = 0.0
        self.best_score: float | None = None

    def heartbeat_loop(self) -> None:
        """Beat until stopped; flag a cancel or a lost lease."""
        while not self.lost.is_set():
            try:
                if self.store.heartbeat(self.job_id, self.lease):
                    self.stop.set()
            except LeaseLost:
                self.lost.set()
                self.stop.set()
                return
            except Exception:  # noqa: BLE001 - a transient database error; try again next beat
                pass
            if self.lost.wait(self.settings.heartbeat_seconds):
                return

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def on_result(self, result: Any) -> None:
        d = asdict(result)
        self.store.add_candidate(self.job_id, self.lease, d)
        if self.best_score is None or d["score"] > self.best_score:
            self.best_score = d["score"]
            self.store.update_progress(self.job_id, self.lease, best={k: d[k] for k in (
                "proposal_id", "score", "flops", "params", "memory_bytes", "latency_ms", "phase")})

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = str(ev.get("type", "event"))
        if kind == "phase":
            self._phase = str(ev.get("phase", ""))
            start = PHASE_SPANS.get(self._phase, (None, None))[0]
            self.store.update_progress(self.job_id, self.lease, phase=self._phase, progress=start)
            self.store.add_event(self.job_id, "phase", f"phase: {self._phase}", dict(ev))
            return
        if kind == "stopped":
            self.store.add_event(self.job_id, "stopped", "search stopped", dict(ev))
            return
        now = time.monotonic()
        fraction = float(ev.get("fraction", 0.0) or 0.0)
        if now - self._last_progress < PROGRESS_EVERY and fraction < 1.0:
            return
        self._last_progress = now
        phase = {"progress": "search"}.get(kind, kind)
        label = f"search: {ev['phase']}" if kind == "progress" and ev.get("phase") else phase
        lo, hi = PHASE_SPANS.get(phase, (None, None))
        progress = None if lo is None else lo + (hi - lo) * max(0.0, min(1.0, fraction))
        self.store.update_progress(self.job_id, self.lease, phase=label, progress=progress)

    def checkpoint(self, blob: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(blob, buf)
        self.store.save_checkpoint(self.job_id, self.lease, buf.getvalue())

    def make_executor(self, evaluator: Any) -> Any:
        from workers.executor import RayExecutor

        self.executor = RayExecutor(evaluator, self.evaluator_options, self.settings.eval_workers)
        return self.executor


def public_summary(summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The summary without server paths: files named as their artifacts."""
    out = {k: v for k, v in summary.items() if k != "out_dir"}
    files = summary.get("files") or {}
    out["files"] = {k: Path(v).relative_to(out_dir).as_posix() if Path(v).is_relative_to(out_dir) else Path(v).name
                    for k, v in files.items()}
    return out


def resume_state(store: Store, job_id: int) -> dict[str, Any] | None:
    """The saved strategy state with every stored candidate as its results (stored candidates
    may run ahead of the last checkpoint; the runner reuses them instead of re-evaluating)."""
    import torch

    raw = store.load_checkpoint(job_id)
    if raw is None:
        return None
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state["results"] = [{k: v for k, v in c.items() if k != "seq"} for c in store.stored_results(job_id)]
    return state


def run_job(db_url: str, job_id: int, lease: str, settings: dict[str, Any]) -> str:
    """Run (or resume) one job to a final status; returns that status."""
    cfg = Settings(**settings)
    store = Store(db_url)
    job = store.get_job(job_id)
    hooks = JobHooks(store, job_id, lease, cfg, (job.config.get("evaluator") or {}).get("options") or {})
    hooks.best_score = (job.best or {}).get("score")  # a resumed run keeps the best so far
    beat = threading.Thread(target=hooks.heartbeat_loop, name=f"heartbeat-{job_id}", daemon=True)
    beat.start()
    out_dir = cfg.data_dir / "jobs" / str(job_id)
    try:
        from search.pipeline import run_pipeline  # heavy imports only once the heartbeat runs

        resume = resume_state(store, job_id)
        if resume is not None:
            store.add_event(job_id, "resumed", f"resuming from a checkpoint with {len(resume['results'])} stored candidates")
        summary = run_pipeline(job.config, out_dir, hooks, resume=resume)
        if hooks.lost.is_set():
            return "lost"
        if summary.get("status") == "stopped":
            store.finish_job(job_id, lease, "cancelled", summary=public_summary(summary, out_dir))
            return "cancelled"
        store.finish_job(job_id, lease, "succeeded", summary=public_summary(summary, out_dir), artifacts=collect_artifacts(out_dir))
        return "succeeded"
    except LeaseLost:
        return "lost"
    except Exception as exc:  # noqa: BLE001 - every failure is recorded for the API
        if hooks.lost.is_set():
            return "lost"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        store.finish_job(job_id, lease, "failed", error=f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
                         traceback=traceback.format_exc())
        return "failed"
    finally:
        hooks.lost.set()
        if hooks.executor is not None:
            hooks.executor.close()
        store.dispose()
