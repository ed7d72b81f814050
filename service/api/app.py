"""The FastAPI app: routers per resource, the store and scheduler held in `app.state`,
migrations applied at start, validation errors as one readable line (plus the details)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .. import dashboard
from ..config import Settings, get_settings
from ..store import Store
from . import conditional, datasets, health, jobs, meta, models


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with `detail` as one line naming each bad field and why."""
    lines = []
    for e in exc.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            msg = f"malformed JSON: {e.get('ctx', {}).get('error', msg)}"
        lines.append(f"{_where(tuple(e.get('loc', ())))}: {msg}")
    return JSONResponse(status_code=422, content={"detail": "; ".join(lines), "errors": jsonable_errors(exc)})


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")} for e in exc.errors()]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the scheduler (and Ray) start with it unless `settings.scheduler` is off."""
    settings = settings or get_settings()
    store = Store(settings.db_url, token_cache_seconds=settings.token_cache_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        store.migrate()
        sched = None
        if settings.scheduler:
            from ..scheduler import Scheduler

            sched = Scheduler(store, settings)
            sched.start()
            app.state.wake_scheduler = sched.wake
        app.state.scheduler = sched
        try:
            yield
        finally:
            if sched is not None:
                sched.stop()
            store.dispose()

    app = FastAPI(
        title="Secateurs",
        version="0.1.0",
        lifespan=lifespan,
        description="Prune convolutional networks as a service: upload a model, submit a compression job, "
        "follow its candidates, download the pruned model.",
    )
    app.state.settings, app.state.store = settings, store
    app.state.wake_scheduler = lambda: None
    app.state.metrics = health.metrics_registry(store)
    app.exception_handler(RequestValidationError)(validation_error)  # typed per exception class, unlike add_...
    app.add_middleware(models.UploadLimit)  # counts upload bytes as they arrive
    app.exception_handler(conditional.NotModified)(conditional.not_modified_handler)  # 304 for ETag polls
    for r in (health.router, meta.router, models.router, datasets.router, jobs.router, dashboard.router):
        app.include_router(r)
    return app
