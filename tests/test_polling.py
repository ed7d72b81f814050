"""Cheap polls: the job, its candidates and its events answer conditional GETs (ETag; 304
with no body while nothing changed, 200 with a new ETag after a new candidate or event);
`service.client.Client` sends and reuses them; the poll endpoints never run a database
call on the event loop; and on PostgreSQL the candidate and event queries have an index."""

from __future__ import annotations

import inspect
import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api import create_app
from service.api.conditional import matches
from service.client import Client
from service.config import Settings


def _result(pid: int) -> dict:
    return {"proposal_id": pid, "policy": {"conv1": 0.25}, "score": 0.5, "flops": 1000, "params": 10}


@pytest.fixture
def polled(tmp_path):
    """An app (scheduler off) with one running job of team a: client, a's and b's headers,
    the store, the job id and its lease."""
    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    with TestClient(app) as client:
        store = app.state.store
        a_token = store.create_token("a")
        a = {"Authorization": f"Bearer {a_token}"}
        b = {"Authorization": f"Bearer {store.create_token('b')}"}
        job = store.create_job(store.team_for_token(a_token).id, {}, {})
        _, lease = store.claim_next()
        yield client, a, b, store, job.id, lease, a_token


def _get(client, path, headers, etag=None):
    return client.get(path, headers={**headers, **({"If-None-Match": etag} if etag else {})})


def test_job_is_304_until_it_changes(polled):
    client, a, _, store, job, lease, _ = polled
    first = _get(client, f"/v1/jobs/{job}", a)
    assert first.status_code == 200
    tag = first.headers["etag"]
    again = _get(client, f"/v1/jobs/{job}", a, tag)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    store.update_progress(job, lease, phase="search", progress=0.5)
    changed = _get(client, f"/v1/jobs/{job}", a, tag)
    assert changed.status_code == 200
    assert changed.json()["phase"] == "search"
    assert changed.headers["etag"] != tag


def test_candidates_are_304_until_a_new_one_is_written(polled):
    client, a, _, store, job, lease, _ = polled
    path = f"/v1/jobs/{job}/candidates?after=0"
    empty = _get(client, path, a)
    assert (empty.status_code, empty.json()) == (200, [])
    tag = empty.headers["etag"]
    assert _get(client, path, a, tag).status_code == 304
    store.add_candidate(job, lease, _result(0))
    fresh = _get(client, path, a, tag)
    assert fresh.status_code == 200
    assert [c["id"] for c in fresh.json()] == [1]
    assert fresh.headers["etag"] != tag
    assert _get(client, path, a, fresh.headers["etag"]).status_code == 304


def test_a_full_page_stays_304_while_later_candidates_arrive(polled):
    client, a, _, store, job, lease, _ = polled
    for pid in range(3):
        store.add_candidate(job, lease, _result(pid))
    path = f"/v1/jobs/{job}/candidates?after=0&limit=2"
    page = _get(client, path, a)
    assert [c["id"] for c in page.json()] == [1, 2]
    store.add_candidate(job, lease, _result(3))
    assert _get(client, path, a, page.headers["etag"]).status_code == 304  # the same two rows
    rest = _get(client, f"/v1/jobs/{job}/candidates?after=2&limit=2", a)
    assert [c["id"] for c in rest.json()] == [3, 4]


def test_events_are_304_until_a_new_one_is_written(polled):
    client, a, _, store, job, _, _ = polled
    path = f"/v1/jobs/{job}/events?after=2"  # after "queued" and "started"
    empty = _get(client, path, a)
    assert (empty.status_code, empty.json()) == (200, [])
    tag = empty.headers["etag"]
    assert _get(client, path, a, tag).status_code == 304
    store.add_event(job, "phase", "searching")
    fresh = _get(client, path, a, tag)
    assert fresh.status_code == 200
    assert [e["kind"] for e in fresh.json()] == ["phase"]
    assert fresh.headers["etag"] != tag


def test_another_teams_etag_is_still_404(polled):
    client, a, b, _, job, _, _ = polled
    tag = _get(client, f"/v1/jobs/{job}", a).headers["etag"]
    assert _get(client, f"/v1/jobs/{job}", b, tag).status_code == 404
    assert _get(client, f"/v1/jobs/{job}", {}, tag).status_code == 401


def test_if_none_match_forms():
    assert matches('"x"', '"x"')
    assert matches('W/"x"', '"x"')
    assert matches('"y", "x"', '"x"')
    assert matches("*", '"x"')
    assert not matches('"y"', '"x"')
    assert not matches(None, '"x"')
    assert not matches("", '"x"')


def test_client_reuses_the_answer_on_304(polled):
    client, _, _, store, job, lease, a_token = polled
    c = Client("http://testserver", a_token)
    c.http = client  # the in-process app, with the client's own headers per request
    client.headers["Authorization"] = f"Bearer {a_token}"
    codes: list[int] = []
    client.event_hooks["response"].append(lambda r: codes.append(r.status_code))
    first = c.job(job)
    assert c.job(job) == first
    assert c.candidates(job) == c.candidates(job) == []
    store.add_candidate(job, lease, _result(0))
    assert [x["id"] for x in c.candidates(job)] == [1]
    assert codes == [200, 304, 200, 304, 200]


def test_job_endpoints_do_no_database_call_on_the_event_loop():
    """Every `/v1/jobs` route and dependency that is a coroutine (run on the event loop) calls
    the store only through the thread pool; the GETs that dashboards poll are plain `def`s."""
    from service.api import jobs

    polled = {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/candidates", "/v1/jobs/{job_id}/events"}
    direct_call = re.compile(r"\bstore\.(?!cached_caller\()\w+\(")  # cached_caller reads memory only
    seen = set()
    for route in jobs.router.routes:
        assert isinstance(route, APIRoute)
        if "GET" in route.methods and route.path in polled:
            assert not inspect.iscoroutinefunction(route.endpoint), route.path
            seen.add(route.path)
        stack = [route.dependant]
        while stack:
            dep = stack.pop()
            stack.extend(dep.dependencies)
            if dep.call is not None and inspect.iscoroutinefunction(dep.call):
                assert not direct_call.search(inspect.getsource(dep.call)), (route.path, dep.call)
    assert seen == polled


def test_candidate_and_event_queries_use_an_index(pg_url):
    """With sequential scans priced out, PostgreSQL answers the polls' queries from the
    (job_id, seq) indexes (and the job's fair-queue count from its own)."""
    from service.store import Store

    store = Store(pg_url)
    store.migrate()
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))

            def plan(sql: str) -> str:
                return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))

            assert "uq_candidates_job_seq" in plan(
                "SELECT * FROM candidates WHERE job_id = 1 AND seq > 5 ORDER BY seq LIMIT 500"
            )
            assert "uq_events_job_seq" in plan("SELECT * FROM events WHERE job_id = 1 AND seq > 5 ORDER BY seq")
            assert "uq_events_job_seq" in plan("SELECT max(seq) FROM events WHERE job_id = 1")
            assert "ix_jobs_status_team" in plan(
                "SELECT team_id, count(*) FROM jobs WHERE status = 'running' GROUP BY team_id"
            )
    finally:
        store.dispose()


def test_token_cache_forgets_revoked_tokens(db_url):
    """A checked token is answered from memory for `token_cache_seconds`; a revoke through the
    same store forgets it at once, one through another store (the CLI) once the time is up."""
    import time

    from service.store import Store

    api = Store(db_url, token_cache_seconds=0.5)
    api.migrate()
    cli = Store(db_url)
    try:
        token = cli.create_token("a")
        assert api.cached_caller(token) is None  # never checked
        team, admin = api.caller_for_token(token)
        assert api.cached_caller(token) == (team, admin)
        api.revoke_token(token)
        assert api.cached_caller(token) is None
        assert api.caller_for_token(token) is None
        other = cli.create_token("a")
        assert api.caller_for_token(other) is not None
        cli.revoke_token(other)
        assert api.cached_caller(other) is not None  # another process's revoke: not seen yet
        time.sleep(0.6)
        assert api.cached_caller(other) is None
        assert api.caller_for_token(other) is None
        assert Store(db_url).cached_caller(token) is None  # no cache unless asked for
    finally:
        api.dispose()
        cli.dispose()


@pytest.fixture
def shared(db_url, tmp_path):
    """An API app (scheduler off, token cache on) and, apart from it, a second `Store` on the
    same database standing for the scheduler or another API process: app client, a's headers,
    a's admin headers, b's headers, the other store, the job id and its lease."""
    from service.store import Store

    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, scheduler=False, token_cache_seconds=60))
    with TestClient(app) as client:
        other = Store(db_url)
        try:
            token = other.create_token("a")
            a = {"Authorization": f"Bearer {token}"}
            admin = {"Authorization": f"Bearer {other.create_token('a', admin=True)}"}
            b = {"Authorization": f"Bearer {other.create_token('b')}"}
            job = other.create_job(other.team_for_token(token).id, {}, {})
            _, lease = other.claim_next()
            for headers in (a, admin, b):  # the tokens are in the API's token cache from here on
                client.get("/v1/jobs", headers=headers)
            yield client, a, admin, b, other, job.id, lease
        finally:
            other.dispose()


def test_a_write_by_another_process_ends_the_304_at_once(shared, monkeypatch):
    """Every change a job's page shows, written through another `Store` (the scheduler, a job
    runner, another API process), turns the very next poll into a 200 with the new data: the
    ETags are read from the database on every poll, so a 304 is never stale. The polls are
    answered by `FastPolls` (the token is cached), not by the routed endpoints."""
    from service.api import jobs

    client, a, _, _, other, job, lease = shared
    routed: list[object] = []
    monkeypatch.setattr(jobs, "_polled", lambda *args: routed.append(args))

    def etags() -> dict[str, str]:
        return {p: client.get(p, headers=a).headers["etag"] for p in paths}

    paths = [f"/v1/jobs/{job}", f"/v1/jobs/{job}/candidates?after=0", f"/v1/jobs/{job}/events?after=0"]
    team = other.team_for_token(a["Authorization"].removeprefix("Bearer "))
    assert team is not None
    writes = [
        ("heartbeat", lambda: other.heartbeat(job, lease), {paths[0]}),
        ("progress", lambda: other.update_progress(job, lease, progress=0.3), {paths[0]}),
        ("best", lambda: other.update_progress(job, lease, best={"score": 0.9}), {paths[0]}),
        ("candidate", lambda: other.add_candidate(job, lease, _result(7)), {paths[0], paths[1]}),
        ("event", lambda: other.add_event(job, "phase", "fine-tuning"), {paths[2]}),
        ("cancel", lambda: other.request_cancel(job, team.id), {paths[0], paths[2]}),
    ]
    tags = etags()
    for name, write, changed in writes:
        assert all(_get(client, p, a, tags[p]).status_code == 304 for p in paths), name
        write()
        for p in paths:
            r = _get(client, p, a, tags[p])
            assert r.status_code == (200 if p in changed else 304), (name, p)
            if p in changed:
                assert r.headers["etag"] != tags[p]
                tags[p] = r.headers["etag"]
    final = client.get(paths[0], headers=a).json()
    assert (final["progress"], final["best"], final["cancel_requested"]) == (0.3, {"score": 0.9}, True)
    assert [c["id"] for c in client.get(paths[1], headers=a).json()] == [1]
    assert routed == []


def test_a_poll_with_a_token_not_yet_checked_is_answered_without_routing(shared, monkeypatch):
    """A dashboard's first requests bring a token this API process has not checked (or no
    longer remembers): `FastPolls` checks it itself and answers them, ahead of FastAPI's
    routing (fifty dashboards opening at once send hundreds such); a token that is not live
    still gets the routed 401."""
    from service.api import jobs

    client, _, _, _, other, job, _ = shared
    fresh = {"Authorization": f"Bearer {other.create_token('a')}"}  # team a's, made by another process
    routed: list[object] = []
    monkeypatch.setattr(jobs, "_polled", lambda *args: routed.append(args))
    for p in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/candidates?after=0", f"/v1/jobs/{job}/events?after=0"):
        r = client.get(p, headers=fresh)
        assert r.status_code == 200, (p, r.text)
    assert routed == []
    r = client.get(f"/v1/jobs/{job}", headers={"Authorization": "Bearer sct_not_a_token"})
    assert r.status_code == 401


def test_fast_and_routed_polls_answer_alike(shared, monkeypatch):
    """A poll answered by `FastPolls` (cached token) and the same poll through FastAPI's route
    (`FastPolls` stepping aside) carry the same status, ETag, body and headers; an admin's
    job answer (with the traceback) has its own ETag."""
    from service.api import polls

    client, a, admin, _, other, job, lease = shared
    other.add_candidate(job, lease, _result(1))
    other.add_event(job, "phase", "searching", {"step": 1})
    other.finish_job(job, lease, "failed", error="boom", traceback="Traceback: secret path")
    paths = [
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}/candidates?after=0&limit=1000",
        f"/v1/jobs/{job}/events?after=1",
        f"/v1/jobs/{job}/candidates",
    ]
    fast = {(p, h["Authorization"]): client.get(p, headers=h) for p in paths for h in (a, admin)}
    monkeypatch.setattr(polls, "parse_poll", lambda scope: None)
    for (p, auth), r in fast.items():
        routed = client.get(p, headers={"Authorization": auth})
        assert r.status_code == routed.status_code == 200
        assert r.content == routed.content, p
        for h in ("etag", "cache-control", "content-type", "content-length"):
            assert r.headers[h] == routed.headers[h], (p, h)
        assert _get(client, p, {"Authorization": auth}, r.headers["etag"]).status_code == 304
    assert fast[(paths[0], admin["Authorization"])].json()["traceback"] == "Traceback: secret path"
    assert fast[(paths[0], a["Authorization"])].json()["traceback"] is None
    user_tag, admin_tag = (fast[(paths[0], h["Authorization"])].headers["etag"] for h in (a, admin))
    assert user_tag != admin_tag


@pytest.mark.parametrize(
    "query", ["after=-1", "after=x", "limit=0", "limit=5001", "after=2147483648", "after=1&after=2", "limit=1.5"]
)
def test_bad_poll_parameters_are_still_422_with_a_cached_token(shared, query):
    client, a, _, _, _, job, _ = shared
    for what in ("candidates", "events"):
        r = client.get(f"/v1/jobs/{job}/{what}?{query}", headers=a)
        assert r.status_code == (200 if query == "after=1&after=2" else 422), (what, query, r.text)


def test_another_teams_job_is_404_with_a_cached_token(shared):
    client, a, _, b, _, job, _ = shared
    for p in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/candidates", f"/v1/jobs/{job}/events?after=0"):
        tag = client.get(p, headers=a).headers["etag"]
        assert _get(client, p, b, tag).status_code == 404
        assert client.get(p, headers=b).status_code == 404
    assert client.get("/v1/jobs/2147483648", headers=a).status_code == 404
    assert client.get("/v1/jobs/0", headers=a).status_code == 422


def test_answers_build_each_body_once():
    """Threads asking together for one ETag's body wait for a single build; the byte bound holds."""
    import threading
    import time

    from service.api.polls import Answers

    answers, builds = Answers(max_bytes=400), []

    def build() -> bytes:
        builds.append(1)
        time.sleep(0.05)
        return b"x" * 100

    threads = [threading.Thread(target=answers.get, args=('"k"', build)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    for i in range(10):
        answers.get(f'"{i}"', lambda: b"y" * 90)
    assert answers._size <= 400
    assert answers.cached('"9"') == b"y" * 90
    assert answers.cached('"0"') is None


def test_one_token_checked_together_is_looked_up_once(tmp_path, monkeypatch):
    """Requests bringing one unchecked token at once (a page's first requests) wait for a
    single database lookup, and all get its answer; an unknown token is still refused."""
    import threading
    import time

    from service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", token_cache_seconds=60)
    store.migrate()
    try:
        token = store.create_token("a")
        lookups: list[str] = []
        real = store._lookup_caller

        def slow(digest: str):
            lookups.append(digest)
            time.sleep(0.05)
            return real(digest)

        monkeypatch.setattr(store, "_lookup_caller", slow)
        found: list[object] = []
        threads = [threading.Thread(target=lambda: found.append(store.caller_for_token(token))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(lookups) == 1
        assert len(found) == 8
        assert all(f is not None and f[0].name == "a" for f in found)
        assert store.caller_for_token(token + "x") is None
    finally:
        store.dispose()


def test_polls_waiting_together_share_one_state_read_made_after_they_arrived():
    """Polls of one job that arrive while a state read runs wait for one next read, which
    starts after all of them arrived (so none is answered from a read older than itself);
    another team's polls read apart; a failing read reaches its waiters and the next read runs."""
    import asyncio
    import threading

    from service.api.polls import StateReads
    from service.store import PollState

    class SlowStore:
        def __init__(self) -> None:
            self.reads: list[tuple[int, int]] = []
            self.gate = threading.Event()
            self.fail = False

        def poll_state(self, job_id: int, team_id: int) -> PollState:
            self.gate.wait(5)
            self.reads.append((job_id, team_id))
            if self.fail:
                raise RuntimeError("database gone")
            # numbered per job and team: another team's read may finish first
            return PollState(self.reads.count((job_id, team_id)), 0, 0)

    async def scenario() -> None:
        store, reads = SlowStore(), StateReads()
        first = asyncio.ensure_future(reads.read(store, 7, 1))
        await asyncio.sleep(0.05)  # the first read is running (blocked on the gate)
        later = [asyncio.ensure_future(reads.read(store, 7, 1)) for _ in range(20)]
        other = asyncio.ensure_future(reads.read(store, 7, 2))
        await asyncio.sleep(0.05)
        store.gate.set()
        assert (await first).version == 1
        versions = {(await f).version for f in later}
        assert versions == {2}  # one read after the first, shared by all 20
        assert (await other) is not None
        assert store.reads.count((7, 1)) == 2
        assert store.reads.count((7, 2)) == 1
        store.fail = True
        with pytest.raises(RuntimeError, match="database gone"):
            await reads.read(store, 7, 1)
        store.fail = False
        assert (await reads.read(store, 7, 1)).version == store.reads.count((7, 1))
        assert reads._running == {}
        assert reads._next == {}

    asyncio.run(scenario())


def test_a_storm_of_polls_reads_the_job_state_a_few_times(shared, monkeypatch):
    """Sixty polls of one job sent at once (fifty dashboards opening its page) are answered
    alike from a few reads of the job's state, not one read each, and none of them is routed."""
    import asyncio

    import httpx

    from service.api import jobs

    client, a, _, _, _, job, _ = shared
    store = client.app.state.store
    reads: list[int] = []
    real = store.poll_state

    def counted(job_id: int, team_id: int):
        reads.append(job_id)
        return real(job_id, team_id)

    monkeypatch.setattr(store, "poll_state", counted)
    routed: list[object] = []
    monkeypatch.setattr(jobs, "_polled", lambda *args: routed.append(args))

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            paths = [f"/v1/jobs/{job}", f"/v1/jobs/{job}/events?after=0"] * 30
            return await asyncio.gather(*(ac.get(p, headers=a) for p in paths))

    answers = asyncio.run(storm())
    assert [r.status_code for r in answers] == [200] * 60
    assert len({r.headers["etag"] for r in answers}) == 2
    assert 1 <= len(reads) <= 6
    assert routed == []


def test_a_storm_of_polls_with_a_token_not_yet_checked_shares_its_blocking_calls(shared, monkeypatch):
    """Sixty first polls of one job with a token the process does not remember (its cache has
    lapsed) check the token in a few calls and build each answer in a few, not a thread-pool
    trip each; every poll still gets its answer."""
    import asyncio

    import httpx

    client, a, _, _, _, job, _ = shared
    store = client.app.state.store
    store._callers.clear()
    checks: list[str] = []
    builds: list[int] = []
    real_check, real_get = store.caller_for_token, store.get_job

    def check(token: str):
        checks.append(token)
        return real_check(token)

    def get_job(job_id: int, team_id: int):
        builds.append(job_id)
        return real_get(job_id, team_id)

    monkeypatch.setattr(store, "caller_for_token", check)
    monkeypatch.setattr(store, "get_job", get_job)

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            paths = [f"/v1/jobs/{job}", f"/v1/jobs/{job}/candidates?after=0"] * 30
            return await asyncio.gather(*(ac.get(p, headers=a) for p in paths))

    answers = asyncio.run(storm())
    assert [r.status_code for r in answers] == [200] * 60
    assert all(r.json()["id"] == job for r in answers[::2])
    assert 1 <= len(checks) <= 3
    assert 1 <= len(builds) <= 3


def test_shared_calls_join_a_running_call_and_forget_it_when_done():
    """A call asked for while the same key's call runs is that call (one run, one result for
    both); a different key runs apart; a failure reaches every caller; the next ask runs anew."""
    import asyncio
    import threading

    from service.api.polls import SharedCalls

    runs: list[str] = []
    gate = threading.Event()

    def call(name: str, fail: bool = False) -> str:
        gate.wait(5)
        runs.append(name)
        if fail:
            raise RuntimeError("database gone")
        return f"{name}-{len(runs)}"

    async def scenario() -> None:
        calls = SharedCalls()
        first = asyncio.ensure_future(calls.run("k", lambda: call("k")))
        await asyncio.sleep(0.02)
        joined = asyncio.ensure_future(calls.run("k", lambda: call("never")))
        other = asyncio.ensure_future(calls.run("o", lambda: call("o")))
        await asyncio.sleep(0.02)
        gate.set()
        assert await first == await joined
        assert (await other).startswith("o-")
        assert sorted(runs) == ["k", "o"]
        assert calls._running == {}
        failing = [asyncio.ensure_future(calls.run("f", lambda: call("f", fail=True))) for _ in range(3)]
        for f in failing:
            with pytest.raises(RuntimeError, match="database gone"):
                await f
        assert await calls.run("k", lambda: call("k")) == f"k-{len(runs)}"
        assert runs.count("k") == 2
        assert runs.count("f") == 1

    asyncio.run(scenario())
