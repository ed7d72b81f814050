"""The answers dashboards poll once a second (a job, its candidates after N, its events after
N), made cheap. Each is named by an ETag made from `Store.poll_state` (one small query read
after the poll arrived, so a 304 is never staler than the database; polls of one job that
wait together share one read, `StateReads`), and its JSON is kept by that ETag in `Answers`
(the rows an ETag names never change), so fifty dashboards opening one job page build its
answers once. `FastPolls` answers these GETs ahead of FastAPI's routing and dependencies,
checking the caller's token itself, and answers a 304 or a kept body on the event loop; the
endpoints in `jobs` answer the rest through the same `jobs.poll_answer`."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ..store import PollState, Store
from ..store.tables import INT_MAX
from .conditional import CACHE_CONTROL, make_etag, matches

Kind = Literal["job", "candidates", "events"]
T = TypeVar("T")

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


def poll_etag(poll: Poll, state: PollState, admin: bool) -> tuple[str, int]:
    """The ETag of a poll's current answer and, for a list, the seq of the last row its page
    holds: the job's row version (and the admin flag, since only admins see a traceback), or
    the page's bounds (candidates and events are append-only, so they name the page: a full
    page stays the same while later rows arrive)."""
    if poll.kind == "job":
        return make_etag("j", poll.job_id, state.version, int(admin)), 0
    last = min(state.candidates if poll.kind == "candidates" else state.last_event, poll.after + poll.limit)
    return make_etag(poll.kind[0], poll.job_id, poll.after, poll.limit, last), last


def ready_answer(answers: Answers, poll: Poll, state: PollState, admin: bool) -> Answer | None:
    """The answer when it needs no database call (304, or a body kept in `answers`), else None."""
    etag, _ = poll_etag(poll, state, admin)
    if matches(poll.if_none_match, etag):
        return Answer(304, etag)
    body = answers.cached(etag)
    return None if body is None else Answer(200, etag, body)


class StateReads:
    """`Store.poll_state` for polls on the event loop, one read at a time per (job, team): a
    poll that arrives while a read is running waits for the next one, which starts when that
    read ends and serves every poll that came meanwhile. So each poll sees the database as it
    was after the poll arrived, and fifty dashboards opening a job page at once cost a few
    reads (and a few pooled connections), not two hundred."""

    def __init__(self) -> None:
        self._running: dict[tuple[int, int], asyncio.Future[PollState | None]] = {}
        self._next: dict[tuple[int, int], asyncio.Future[PollState | None]] = {}

    async def read(self, store: Store, job_id: int, team_id: int) -> PollState | None:
        """The job's poll state read after this call began; None if it is not the team's."""
        key = (job_id, team_id)
        loop = asyncio.get_running_loop()
        if key not in self._running:
            fut = self._running[key] = loop.create_future()
            self._start(key, partial(store.poll_state, job_id, team_id), fut)
        else:
            fut = self._next.setdefault(key, loop.create_future())
        return await asyncio.shield(fut)

    def _start(
        self, key: tuple[int, int], read: Callable[[], PollState | None], fut: asyncio.Future[PollState | None]
    ) -> None:
        def done(task: asyncio.Future[PollState | None]) -> None:
            if task.cancelled():
                fut.cancel()
            elif (exc := task.exception()) is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(task.result())
            nxt = self._next.pop(key, None)
            if nxt is None:
                del self._running[key]
            else:
                self._running[key] = nxt
                self._start(key, read, nxt)

        asyncio.ensure_future(run_in_threadpool(read)).add_done_callback(done)


class SharedCalls:
    """Blocking calls in the thread pool, one at a time per key: a caller that asks for a key
    while its call runs awaits that same call. Fifty dashboards opening one job page send the
    same first requests with one token; they cost a thread-pool trip each kind, not one each
    (a trip is a thread hand-off and a wake-up of the event loop, most of a poll's CPU)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """`call()`'s result, from the call running for `key` if there is one."""
        fut = self._running.get(key)
        if fut is None:
            fut = self._running[key] = asyncio.ensure_future(run_in_threadpool(call))
            fut.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(fut)

    def _forget(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # seen: a failure reaches its callers, not the loop's "never retrieved" log


PollAnswer = Callable[[Store, Answers, Poll, int, bool, PollState | None], Answer | None]
"""`jobs.poll_answer`: a poll's answer for a caller (team id, admin flag), from the job's poll
state when it is given; None if the job is not the team's. Blocking (database calls): run in
the thread pool."""


class FastPolls:
    """ASGI middleware: a plain poll (`parse_poll`) is answered here, without FastAPI's
    routing, validation and dependencies: its token from the token cache (or checked once, in
    the thread pool, for every request that asks at the same time: fifty dashboards opening a
    page send hundreds of first requests with one token), the job's state from `StateReads`,
    then a 304 or a kept body on the event loop, and only a body not yet built in the thread
    pool (`answer`). Any other request, a token that is not live, or a poll for a job that is
    not the caller's team's goes on to the app (which answers its 401 or 404)."""

    def __init__(self, app: ASGIApp, answer: PollAnswer) -> None:
        self.app = app
        self.answer = answer
        self.states = StateReads()
        self.calls = SharedCalls()

    async def _answer(self, store: Store, answers: Answers, poll: Poll) -> Answer | None:
        caller = store.cached_caller(poll.token) or await self.calls.run(
            ("token", poll.token), partial(store.caller_for_token, poll.token)
        )
        if caller is None:
            return None
        team, admin = caller
        state = await self.states.read(store, poll.job_id, team.id)
        if state is None:
            return None
        if (ready := ready_answer(answers, poll, state, admin)) is not None:
            return ready
        # polls alike in all but their token share one answer (the same team, state and If-None-Match)
        key = ("answer", poll.kind, poll.job_id, poll.after, poll.limit, poll.if_none_match, team.id, admin, state)
        return await self.calls.run(key, partial(self.answer, store, answers, poll, team.id, admin, state))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        poll = parse_poll(scope)
        state = scope["app"].state if poll is not None else None
        if poll is None or state is None:
            await self.app(scope, receive, send)
            return
        answer = await self._answer(state.store, state.answers, poll)
        if answer is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"etag", answer.etag.encode()), (b"cache-control", CACHE_CONTROL.encode())]
        if answer.status == 200:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
