"""The scheduler: a thread in the API process that claims queued jobs from the store (atomic,
fair across teams: priority, then the team with the fewest running jobs, round-robin, then
age; a team at `max_running_per_team` waits; up to `max_concurrent_jobs` here), runs each as a Ray task
(`workers.jobrun.run_job`) with a relay actor for its reports, writes those reports to the
store and beats the job's heartbeat while the task lives, requeues jobs whose heartbeat went
stale (their scheduler died; the next run resumes them), and kills runs that ignore a cancel
past the grace period. Only this process talks to the database."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .store import JobStatus, Store

log = logging.getLogger(__name__)


@dataclass
class RunHandle:
    """A job this scheduler started: its Ray task, relay actor and lease."""

    job_id: int
    lease: str
    ref: Any
    relay: Any
    cancel_seen: float | None = None
    started: float = field(default_factory=time.monotonic)
    beat: float = 0.0


class Scheduler:
    """Claims and runs jobs on Ray; one per API process (several may share a database)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        self.name = f"{self.identity['host']}:{self.identity['pid']}"
        self.runs: dict[int, RunHandle] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect to Ray and start the loop thread."""
        from workers.cluster import ensure_ray

        ensure_ray(num_cpus=self.settings.ray_num_cpus)
        self._thread = threading.Thread(target=self._loop, name="secateurs-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a scheduling pass now (after a submit or cancel)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop, kill this process's runs and put their jobs back in the queue (they
        resume on the next claim, here after a restart or on another server) and leave Ray."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        import ray

        for run in list(self.runs.values()):
            self._pump(run)
            ray.cancel(run.ref, force=True)
            self.store.release(run.job_id, run.lease, "server stopped; job requeued to resume")
        from workers.cluster import shutdown_ray

        shutdown_ray()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler pass failed")
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: requeue stale jobs, reap finished runs, enforce cancels, claim new jobs."""
        self.store.requeue_stale(self.settings.stale_after_seconds, self.settings.max_attempts)
        for run in list(self.runs.values()):
            self._pump(run)
        self._reap()
        self._enforce_cancels()
        while len(self.runs) < self.settings.max_concurrent_jobs and not self._stop.is_set():
            claimed = self.store.claim_next(self.identity, self.settings.max_running_per_team)
            if claimed is None:
                break
            job, lease = claimed
            self._launch(job.id, lease)

    def _launch(self, job_id: int, lease: str) -> None:
        import ray

        from workers.jobrun import run_job
        from workers.relay import Relay

        from .runs import resume_state

        job = self.store.get_job(job_id)
        assert job is not None
        resume = resume_state(self.store, job_id)
        if resume is not None:
            self.store.add_event(
                job_id, "resumed", f"resuming from a checkpoint with {len(resume['results'])} stored candidates"
            )
        relay = ray.remote(Relay).options(num_cpus=0, name=f"secateurs-relay-{job_id}-{lease[:8]}").remote()
        task = ray.remote(run_job).options(num_cpus=0, max_retries=0, name=f"secateurs-job-{job_id}")
        out_dir = str(self.settings.data_dir / "jobs" / str(job_id))
        cache_dir = str(self.settings.data_dir / "cache" / "base-models")  # trained zoo models, by training key
        ref = task.remote(job.config, out_dir, relay, resume, self.settings.eval_workers, cache_dir)
        self.runs[job_id] = RunHandle(job_id, lease, ref, relay, beat=time.monotonic())
        log.info("job %s started (lease %s)", job_id, lease)

    def _pump(self, run: RunHandle) -> bool:
        """Write what the run reported since the last pass and beat its heartbeat; on a cancel or
        a lost lease, tell the run to stop. Returns False when the lease was lost."""
        import ray

        from .runs import apply_messages
        from .store import LeaseLost

        try:
            apply_messages(self.store, run.job_id, run.lease, ray.get(run.relay.drain.remote()))
            if time.monotonic() - run.beat >= self.settings.heartbeat_seconds:
                run.beat = time.monotonic()
                if self.store.heartbeat(run.job_id, run.lease):
                    run.relay.stop.remote()
        except LeaseLost:
            run.relay.stop.remote()
            ray.cancel(run.ref, force=True)
            return False
        return True

    def _reap(self) -> None:
        import ray

        if not self.runs:
            return
        done, _ = ray.wait([r.ref for r in self.runs.values()], num_returns=len(self.runs), timeout=0)
        for ref in done:
            run = next(r for r in self.runs.values() if r.ref == ref)
            del self.runs[run.job_id]
            held = self._pump(run)  # the run's last reports first, then its outcome
            ray.kill(run.relay, no_restart=True)
            if not held:
                continue
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the task died (killed, out of memory, lost node)
                cancelled = self.store.cancel_requested(run.job_id)
                first = str(exc).splitlines()[0] if str(exc) else ""
                outcome = (
                    {"status": JobStatus.CANCELLED}
                    if cancelled
                    else {
                        "status": JobStatus.FAILED,
                        "error": f"the job's worker died: {type(exc).__name__}: {first}",
                        "traceback": str(exc),
                    }
                )
            self.store.finish_job(
                run.job_id,
                run.lease,
                outcome["status"],
                summary=outcome.get("summary"),
                error=outcome.get("error"),
                traceback=outcome.get("traceback"),
                artifacts=outcome.get("artifacts"),
                scheduler=self.identity,
            )
            if outcome.get("traceback"):  # users see the one-line error; the whole story is kept here
                log.error("job %s failed: %s\n%s", run.job_id, outcome.get("error"), outcome["traceback"])

    def _enforce_cancels(self) -> None:
        import ray

        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.cancel_seen is None:
                if self.store.cancel_requested(run.job_id):
                    run.cancel_seen = now
                    run.relay.stop.remote()
            elif now - run.cancel_seen > self.settings.cancel_grace_seconds:
                ray.cancel(run.ref, force=True)
                self._pump(run)
                ray.kill(run.relay, no_restart=True)
                self.store.finish_job(run.job_id, run.lease, JobStatus.CANCELLED, scheduler=self.identity)
                del self.runs[run.job_id]
