"""`/healthz` and Prometheus `/metrics` (jobs by status, candidates evaluated, evaluation
seconds), read from the store at scrape time so every API process reports the same totals."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import text

from ..store import JOB_STATUSES, Store
from .deps import get_store

router = APIRouter(tags=["health"])


class StoreCollector:
    """Prometheus collector over the store's totals."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator:
        jobs = GaugeMetricFamily("secateurs_jobs", "Jobs by status", labels=["status"])
        counts = self.store.job_counts()
        for st in JOB_STATUSES:
            jobs.add_metric([st], counts.get(st, 0))
        yield jobs
        n, secs = self.store.candidate_totals()
        yield CounterMetricFamily("secateurs_candidates_evaluated", "Candidates evaluated, all jobs", value=n)
        yield CounterMetricFamily(
            "secateurs_evaluation_seconds", "Seconds spent evaluating candidates, all jobs", value=secs
        )


def metrics_registry(store: Store) -> CollectorRegistry:
    """A registry holding the store collector (one per app, so tests can run several apps)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(store))
    return reg


@router.get("/healthz", summary="Liveness: the API answers and the database is reachable")
def healthz(store: Store = Depends(get_store)) -> dict:
    with store.read() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok", "database": store.engine.dialect.name}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
