"""The web dashboard: one static page at `/` plus its JS, CSS and the bundled charting library
under `/static/`. The page talks to the `/v1` API from the browser with the user's team token,
so this router holds no logic and no data of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.conditional import body_etag, matches

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Everything the page loads comes from this origin (no CDN); Chart.js sets inline styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard's single page; the JS routes between views with the URL fragment."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


def upload_rules(request: Request) -> dict[str, dict[str, Any]]:
    """What the upload endpoints take: the file suffixes each accepts and, when the app has its
    settings, the largest file in bytes, so the form's file pickers and help text say what the
    API will refuse without restating it."""
    from service.api.models import SUFFIXES as MODEL_SUFFIXES
    from service.archive import SUFFIXES as ARCHIVE_SUFFIXES

    settings = getattr(request.app.state, "settings", None)
    rules: dict[str, dict[str, Any]] = {
        "models": {"suffixes": list(MODEL_SUFFIXES)},
        "datasets": {"suffixes": list(ARCHIVE_SUFFIXES)},
    }
    if settings is not None:
        rules["models"]["max_bytes"] = settings.max_upload_bytes
        rules["datasets"]["max_bytes"] = settings.max_dataset_upload_bytes
    return rules


CHOICES_PATH = "/dashboard/choices.json"


@router.get(CHOICES_PATH)
async def choices_json(request: Request) -> Response:
    """`choices`, as JSON made once per app (they change only with the code and the settings),
    with an ETag: every dashboard that opens asks for it, fifty at once in a start-up storm
    (`ChoicesFastPath` answers all but the first)."""
    state = request.app.state
    if getattr(state, "choices_json", None) is None:
        state.choices_json = json.dumps(choices(request), separators=(",", ":")).encode()
        state.choices_etag = body_etag(state.choices_json)
    if matches(request.headers.get("if-none-match"), state.choices_etag):
        return Response(status_code=304, headers={"ETag": state.choices_etag, "Cache-Control": "no-cache"})
    headers = {"ETag": state.choices_etag, "Cache-Control": "no-cache"}
    return Response(state.choices_json, media_type="application/json", headers=headers)


class ChoicesFastPath:
    """ASGI middleware: `GET /dashboard/choices.json`, once made, answered from memory ahead of
    FastAPI's routing (200 with the JSON, or 304 when `If-None-Match` names its ETag), since a
    start-up storm of dashboards sends fifty at once; anything else goes on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mine = scope["type"] == "http" and scope["path"] == CHOICES_PATH and scope["method"] == "GET"
        state = scope["app"].state if mine and not scope["query_string"] else None
        body, etag = getattr(state, "choices_json", None), getattr(state, "choices_etag", "")
        if body is None:
            await self.app(scope, receive, send)
            return
        inm = b", ".join(v for k, v in scope["headers"] if k == b"if-none-match").decode("latin-1")
        headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        if matches(inm, etag):
            body, status = b"", 304
        else:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def choices(request: Request) -> dict[str, Any]:
    """Names the page needs that `/v1` has no endpoint for: what the submit form offers (data
    sets, criteria, target kinds, pruning schedules, residual-stream modes, deployment runtimes,
    tasks and how a page writes each task's score name, the upload endpoints' file suffixes and
    size limits), read from the registries and the
    job model so the form never lists something the API refuses, and the job statuses with the
    final ones (`workers.status`), so the page never restates them."""
    import typing

    from pruning.criteria import CRITERIA
    from pruning.data import DATASETS
    from pruning.runtime import RUNTIMES
    from pruning.tasks import list_tasks, task_class
    from search.space import Streams
    from search.target import KINDS
    from workers.config import PruneSchedule
    from workers.status import FINAL, JobStatus

    return {
        "datasets": list(DATASETS),
        "criteria": sorted(CRITERIA),
        "targets": list(KINDS),
        "prune_schedules": list(typing.get_args(PruneSchedule)),
        "streams": list(typing.get_args(Streams)),
        "runtimes": list(RUNTIMES),
        "tasks": list_tasks(),
        "score_labels": {task_class(t).score_name: task_class(t).score_label for t in list_tasks()},
        "statuses": [s.value for s in JobStatus],
        "final": [s.value for s in JobStatus if s in FINAL],
        "uploads": upload_rules(request),
    }


@router.get("/static/{path:path}")
def static_file(path: str) -> FileResponse:
    """A file under `service/static/`; anything outside it (`..`, absolute paths) or that the
    file system cannot take as a path (a NUL byte, a name over 255 bytes) is a 404."""
    try:
        target = (STATIC_DIR / path).resolve()
        found = target.is_relative_to(STATIC_DIR) and target.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise HTTPException(status_code=404, detail="not found")
    return FileResponse(target, headers={"Cache-Control": "no-cache"})
