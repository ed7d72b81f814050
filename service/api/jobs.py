"""`/v1/jobs`: submit, list, inspect, follow (candidates and events after N), cancel, and the
artifacts of finished jobs. Every id belongs to one team; another team's id answers 404. The
job, its candidates and its events answer conditional GETs (ETag, 304; `conditional`), the
same way here and in `polls.FastPolls` (`poll_answer`)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, ValidationError

from workers.config import JobConfig, RowId

from ..config import Settings
from ..store import JobStatus, PollState, Store, as_utc, candidate_dict
from ..store.tables import Job, Team
from ..submit import SpecError, resolve_config
from . import conditional
from .conditional import NOT_MODIFIED_RESPONSE, IfNoneMatch
from .deps import After, Caller, Offset, current_caller, current_team, get_settings, get_store
from .errors import ErrorOut, error_responses
from .polls import LIMITS, Answer, Answers, Poll, poll_etag, ready_answer

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 422))


class JobOut(BaseModel):
    id: int
    status: JobStatus
    phase: str
    progress: float
    priority: int
    candidates_evaluated: int
    best: dict[str, Any] | None
    summary: dict[str, Any] | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    spec: dict[str, Any]

    @classmethod
    def of(cls, j: Job) -> JobOut:
        return cls(
            id=j.id,
            status=j.status,
            phase=j.phase,
            progress=j.progress,
            priority=j.priority,
            candidates_evaluated=j.candidates_evaluated,
            best=j.best,
            summary=j.summary,
            error=j.error,
            attempts=j.attempts,
            cancel_requested=j.cancel_requested,
            created_at=as_utc(j.created_at),
            started_at=as_utc(j.started_at),
            finished_at=as_utc(j.finished_at),
            heartbeat_at=as_utc(j.heartbeat_at),
            spec=j.spec,
        )


class JobDetail(JobOut):
    traceback: str | None = Field(
        None, description="a failed job's traceback, for admin tokens only (others see the one-line error)"
    )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ArtifactOut(BaseModel):
    name: str
    size: int
    sha256: str
    url: str


def _job(store: Store, team: Team, job_id: int) -> Job:
    job = store.get_job(job_id, team.id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


DEFAULT_PRIORITY: int = JobConfig.model_fields["priority"].default
"""A job's priority when its spec names none; only admin tokens may ask for more."""


def parse_spec(body: bytes) -> JobConfig:
    """The job spec a request body holds, checked field by field; RequestValidationError (422)
    as FastAPI raises for a body it validates. Called in the thread pool: a large spec takes a
    while to parse and check, and the event loop must go on answering other requests."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        error = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        where = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", where), "msg": "JSON decode error", "ctx": {"error": error}}]
        ) from None
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobConfig"}}},
    }
}
"""The submit route's body in the OpenAPI document: the endpoint reads the body itself
(`parse_spec`), so the schema is declared here and put in the components by `app.openapi`."""


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    summary="Submit a compression job",
    responses={
        **error_responses(400, 413),
        403: {"model": ErrorOut, "description": "a priority above the default from a token that is not an admin's"},
    },
    openapi_extra=SPEC_BODY,
)
async def submit_job(
    request: Request,
    caller: Caller = Depends(current_caller),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> JobOut:
    """The body is a `JobConfig`, at most `SECATEURS_MAX_SPEC_BYTES` (413 above, `limits.UploadLimit`);
    it is read only after the token is checked, and parsed and checked off the event loop."""
    spec = await run_in_threadpool(parse_spec, await request.body())
    team = caller.team
    if spec.priority > DEFAULT_PRIORITY and not caller.admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"priority: above {DEFAULT_PRIORITY} needs an admin token (secateurs token create --admin); "
            f"use {DEFAULT_PRIORITY} or lower",
        )
    try:
        config = await run_in_threadpool(resolve_config, spec, team.id, store, settings)
    except SpecError as exc:
        raise HTTPException(422, str(exc)) from exc
    job = await run_in_threadpool(
        store.create_job, team.id, spec.model_dump(mode="json"), config.model_dump(mode="json"), spec.priority
    )
    request.app.state.wake_scheduler()
    return JobOut.of(job)


@router.get("", response_model=JobPage, summary="The team's jobs, newest first")
def list_jobs(
    status_: JobStatus | None = Query(None, alias="status", description="only jobs with this status"),
    limit: int = Query(50, ge=1, le=500),
    offset: Offset = 0,
    team: Team = Depends(current_team),
    store: Store = Depends(get_store),
) -> JobPage:
    items, total = store.list_jobs(team.id, status_, limit, offset)
    return JobPage(items=[JobOut.of(j) for j in items], total=total, limit=limit, offset=offset)


def poll_answer(
    store: Store, answers: Answers, poll: Poll, team_id: int, admin: bool, state: PollState | None = None
) -> Answer | None:
    """The answer to a poll of a job, its candidates or its events (the caller's team and admin
    flag; None if the job is not the team's): 304 if `If-None-Match` names the current ETag
    (`polls.poll_etag`, from `state`, read here when not given) or a body already built
    (`polls.ready_answer`), else 200 with the JSON, built once per ETag (`Answers`)."""
    state = state if state is not None else store.poll_state(poll.job_id, team_id)
    if state is None:
        return None
    if (ready := ready_answer(answers, poll, state, admin)) is not None:
        return ready
    etag, last = poll_etag(poll, state, admin)
    if poll.kind == "job":
        job = store.get_job(poll.job_id, team_id)
        if job is None:
            return None
        # the body and its ETag from the same read of the row (it may have moved on since `state`)
        state = PollState(job.version, state.candidates, state.last_event)
        if (ready := ready_answer(answers, poll, state, admin)) is not None:
            return ready
        etag, _ = poll_etag(poll, state, admin)
        return Answer(200, etag, answers.get(etag, lambda: job_json(job, admin)))

    def build() -> bytes:
        n = last - poll.after
        if poll.kind == "candidates":
            rows = store.list_candidates(poll.job_id, poll.after, n) if n > 0 else []
            items = [{"id": c.seq, **candidate_dict(c), "created_at": as_utc(c.created_at)} for c in rows]
        else:
            events = store.list_events(poll.job_id, poll.after, n) if n > 0 else []
            items = [
                {"id": e.seq, "kind": e.kind, "message": e.message, "data": e.data, "created_at": as_utc(e.created_at)}
                for e in events
            ]
        return to_json(items)

    return Answer(200, etag, answers.get(etag, build))


def job_json(job: Job, admin: bool) -> bytes:
    """The job's answer; a traceback names the server's files and code, so only admins see it
    (and the server log has it)."""
    detail = JobDetail(**JobOut.of(job).model_dump(), traceback=job.traceback if admin else None)
    return detail.model_dump_json().encode()


def to_json(items: list[dict[str, Any]]) -> bytes:
    """JSON as FastAPI's `JSONResponse` writes it (compact, no NaN), datetimes in ISO 8601."""
    return json.dumps(
        items, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=datetime.isoformat
    ).encode()


def _polled(request: Request, poll: Poll, caller: Caller) -> Response:
    """A poll answered through FastAPI (a token not in the token cache, or FastPolls not in
    front): the same `poll_answer`, 404 for another team's job."""
    answer = poll_answer(request.app.state.store, request.app.state.answers, poll, caller.team.id, caller.admin)
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {poll.job_id} not found")
    if answer.status == 304:
        raise conditional.NotModified(answer.etag)
    headers = {"ETag": answer.etag, "Cache-Control": conditional.CACHE_CONTROL}
    return Response(answer.body, media_type="application/json", headers=headers)


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    summary="One job: status, phase, progress, best so far, error",
    responses={**NOT_MODIFIED_RESPONSE, **error_responses(404)},
)
def get_job(
    job_id: RowId,
    request: Request,
    if_none_match: IfNoneMatch = None,
    caller: Caller = Depends(current_caller),
) -> Response:
    return _polled(request, Poll("job", job_id, 0, 0, "", if_none_match), caller)


@router.get(
    "/{job_id}/candidates",
    response_model=list[dict[str, Any]],
    summary="Evaluated candidates with seq > after",
    responses={**NOT_MODIFIED_RESPONSE, **error_responses(404)},
)
def list_candidates(
    job_id: RowId,
    request: Request,
    after: After = 0,
    limit: int = Query(LIMITS["candidates"][0], ge=1, le=LIMITS["candidates"][1]),
    if_none_match: IfNoneMatch = None,
    caller: Caller = Depends(current_caller),
) -> Response:
    return _polled(request, Poll("candidates", job_id, after, limit, "", if_none_match), caller)


@router.get(
    "/{job_id}/events",
    response_model=list[dict[str, Any]],
    summary="Job events with seq > after",
    responses={**NOT_MODIFIED_RESPONSE, **error_responses(404)},
)
def list_events(
    job_id: RowId,
    request: Request,
    after: After = 0,
    limit: int = Query(LIMITS["events"][0], ge=1, le=LIMITS["events"][1]),
    if_none_match: IfNoneMatch = None,
    caller: Caller = Depends(current_caller),
) -> Response:
    return _polled(request, Poll("events", job_id, after, limit, "", if_none_match), caller)


@router.post(
    "/{job_id}/cancel", response_model=JobOut, summary="Stop a queued or running job", responses=error_responses(404)
)
def cancel_job(
    job_id: RowId, request: Request, team: Team = Depends(current_team), store: Store = Depends(get_store)
) -> JobOut:
    job = store.request_cancel(job_id, team.id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    request.app.state.wake_scheduler()
    current = store.get_job(job_id, team.id)
    if current is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return JobOut.of(current)


@router.get(
    "/{job_id}/artifacts",
    response_model=list[ArtifactOut],
    summary="Output files of a finished job",
    responses=error_responses(404),
)
def list_artifacts(
    job_id: RowId, request: Request, team: Team = Depends(current_team), store: Store = Depends(get_store)
) -> list[ArtifactOut]:
    _job(store, team, job_id)
    return [
        ArtifactOut(
            name=a.name,
            size=a.size,
            sha256=a.sha256,
            url=str(request.url_for("download_artifact", job_id=job_id, name=a.name)),
        )
        for a in store.list_artifacts(job_id)
    ]


@router.get(
    "/{job_id}/artifacts/{name:path}",
    summary="Download one artifact",
    response_class=FileResponse,
    responses=error_responses(404),
)
def download_artifact(
    job_id: RowId, name: str, team: Team = Depends(current_team), store: Store = Depends(get_store)
) -> FileResponse:
    _job(store, team, job_id)
    match = next((a for a in store.list_artifacts(job_id) if a.name == name), None)
    if match is None or not Path(match.path).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact {name!r} of job {job_id} not found")
    return FileResponse(match.path, filename=Path(name).name, media_type="application/octet-stream")
