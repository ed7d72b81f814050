"""The FastAPI app: routers per resource, the store and scheduler held in `app.state`,
migrations applied at start, validation errors as one readable line plus the details
(`errors.validation_error`, in the `ErrorOut` body every 4xx answer has)."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from workers.config import JobConfig

from .. import dashboard
from ..config import Settings, get_settings
from ..store import Store
from ..submit import warm_up
from . import conditional, datasets, health, jobs, meta, methods, models, polls
from .errors import error_responses, validation_error
from .limits import UploadLimit


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the scheduler (and Ray) start with it unless `settings.scheduler` is off."""
    settings = settings or get_settings()
    store = Store(settings.db_url, token_cache_seconds=settings.token_cache_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        store.migrate()
        await run_in_threadpool(warm_up)
        gc.freeze()  # what start-up made is never traced again: cheaper collections in a burst
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
        responses=error_responses(422),  # every route's bad input: the ErrorOut body `validation_error` sends
        description="Prune convolutional networks as a service: upload a model, submit a compression job, "
        "follow its candidates, download the pruned model.",
    )
    app.state.settings, app.state.store = settings, store
    app.state.wake_scheduler = lambda: None
    app.state.metrics = health.metrics_registry(store)
    app.exception_handler(RequestValidationError)(validation_error)  # typed per exception class, unlike add_...
    app.add_middleware(UploadLimit)  # counts upload bytes as they arrive
    app.add_middleware(methods.Options)  # OPTIONS lists every method of a path
    app.add_middleware(polls.FastPolls, answer=jobs.poll_answer)  # polls by a cached token skip the routing
    app.add_middleware(dashboard.ChoicesFastPath)  # and so does the dashboard's form choices, once made
    app.state.answers = polls.Answers()  # polled JSON bodies by ETag
    app.exception_handler(StarletteHTTPException)(methods.method_not_allowed)  # and so does a 405's Allow
    app.exception_handler(conditional.NotModified)(conditional.not_modified_handler)  # 304 for ETag polls
    for r in (health.router, meta.router, models.router, datasets.router, jobs.router, dashboard.router):
        app.include_router(r)
    with_schemas(app, JobConfig)
    return app


def with_schemas(app: FastAPI, *schemas: type[BaseModel]) -> None:
    """Put `schemas` (and what they refer to) in the OpenAPI document's components: bodies an
    endpoint reads itself (`jobs.SPEC_BODY`) are named there by `$ref`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            _, defs = models_json_schema(
                [(m, "validation") for m in schemas], ref_template="#/components/schemas/{model}"
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
