"""The answers dashboards poll once a second (a job, its candidates after N, its events after
N), made cheap. Each is named by an ETag made from `Store.poll_state` (one small query, on
every poll, so a 304 is never staler than the database), and its JSON is kept by that ETag in
`Answers` (the rows an ETag names never change), so fifty dashboards opening one job page
build its answers once. `FastPolls` answers these GETs ahead of FastAPI's routing and
dependencies, checking the caller's token itself; the endpoints in `jobs` answer the rest
through the same `jobs.poll_answer`."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ..store import Store
from ..store.tables import INT_MAX
from .conditional import CACHE_CONTROL

Kind = Literal["job", "candidates", "events"]

LIMITS = {"candidates": (500, 5000), "events": (500, 5000)}
"""`?limit=`'s default and largest value per list (the endpoints' `Query` says the same)."""


@dataclass(frozen=True)
class Poll:
    """One polled GET: what it asks for, the caller's token and the `If-None-Match` it sent."""

    kind: Kind
    job_id: int
    after: int
    limit: int
    token: str
    if_none_match: str | None


@dataclass(frozen=True)
class Answer:
    """A poll's answer: 304 (no body) or 200 with the JSON; the ETag either way."""

    status: int
    etag: str
    body: bytes = b""


class Answers:
    """JSON bodies by ETag, the most recently used first, at most `max_bytes` in all. `get`
    builds a missing body once however many threads ask for it together (the others wait for
    it): fifty dashboards opening a page at once cost one build."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def cached(self, etag: str) -> bytes | None:
        """The body named `etag`, if kept (no I/O: safe on the event loop)."""
        with self._lock:
            body = self._bodies.get(etag)
            if body is not None:
                self._bodies.move_to_end(etag)
            return body

    def get(self, etag: str, build: Callable[[], bytes]) -> bytes:
        """The body named `etag`, built by `build` if it is not kept (one build per ETag)."""
        if (body := self.cached(etag)) is not None:
            return body
        with self._lock:
            gate = self._building.setdefault(etag, threading.Lock())
        with gate:
            if (body := self.cached(etag)) is not None:
                return body
            body = build()
            with self._lock:
                self._building.pop(etag, None)
                if len(body) <= self.max_bytes // 4:
                    self._bodies[etag] = body
                    self._size += len(body)
                    while self._size > self.max_bytes:
                        _, old = self._bodies.popitem(last=False)
                        self._size -= len(old)
            return body


_PATH = re.compile(r"/v1/jobs/([1-9][0-9]{0,9})(?:/(candidates|events))?")
_NUMBER = re.compile(r"[0-9]{1,10}")


def parse_poll(scope: Scope) -> Poll | None:
    """The poll a request is, when it is a plain one: GET on a job, its candidates or its
    events, a bearer token, and only well-formed `after`/`limit` in range; None for anything
    else (FastAPI then answers it, with its 401, 404 or 422 where one is due)."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    m = _PATH.fullmatch(scope["path"])
    if m is None or int(m[1]) > INT_MAX:
        return None
    kind: Kind = m[2] or "job"  # type: ignore[assignment]
    token = inm = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if token is not None:
                return None
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
        elif name == b"if-none-match":
            inm = value.decode("latin-1") if inm is None else f"{inm}, {value.decode('latin-1')}"
    if token is None:
        return None
    default, most = LIMITS.get(kind, (0, 0))
    params = {"after": 0, "limit": default}
    query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    if kind == "job" and query:
        return None
    for name, value in query:
        if name not in params or not _NUMBER.fullmatch(value):
            return None
        params[name] = int(value)
    if kind != "job" and (len(query) != len({n for n, _ in query}) or params["after"] > INT_MAX):
        return None
    if kind != "job" and not 1 <= params["limit"] <= most:
        return None
    return Poll(kind, int(m[1]), params["after"], params["limit"], token, inm)


PollAnswer = Callable[[Store, Answers, Poll, int, bool], Answer | None]
"""`jobs.poll_answer`: a poll's answer for a caller (team id, admin flag), None if the job is
not the team's. Blocking (database calls): run in the thread pool."""


class FastPolls:
    """ASGI middleware: a plain poll (`parse_poll`) is answered here, with one trip to the
    thread pool for its token (from the token cache, or checked once for every request that
    asks at the same time: fifty dashboards opening a page send hundreds of first requests with
    one token) and `answer`, and none of FastAPI's routing, validation and dependencies; any
    other request, a token that is not live, or a poll for a job that is not the caller's
    team's goes on to the app (which answers its 401 or 404)."""

    def __init__(self, app: ASGIApp, answer: PollAnswer) -> None:
        self.app = app
        self.answer = answer

    def _answer(self, store: Store, answers: Answers, poll: Poll) -> Answer | None:
        caller = store.caller_for_token(poll.token)
        if caller is None:
            return None
        team, admin = caller
        return self.answer(store, answers, poll, team.id, admin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        poll = parse_poll(scope)
        state = scope["app"].state if poll is not None else None
        if poll is None or state is None:
            await self.app(scope, receive, send)
            return
        answer = await run_in_threadpool(self._answer, state.store, state.answers, poll)
        if answer is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"etag", answer.etag.encode()), (b"cache-control", CACHE_CONTROL.encode())]
        if answer.status == 200:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
