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
