"""The fair queue on SQLite and PostgreSQL: a late job of another team starts before one
team's backlog drains, teams take turns when they run as many jobs, priority still comes
first, the per-team limit on running jobs holds (also with six concurrent claimers), and
the scheduler that claimed and ran a job is in its events. Over the API: only admin tokens
may raise a job's priority, and `secateurs token create --admin` makes one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_service_support import claim_concurrently

from service.api import create_app
from service.config import Settings
from service.store import Store

MINIMAL = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
}


def _teams(store: Store, *names: str) -> list[int]:
    return [store.team_for_token(store.create_token(n)).id for n in names]


def _queue(store: Store, team: int, n: int, priority: int = 0) -> list[int]:
    return [store.create_job(team, {}, {}, priority=priority).id for _ in range(n)]


def _claim(store: Store, team_limit: int = 0) -> int | None:
    got = store.claim_next(team_limit=team_limit)
    return None if got is None else got[0].id


def _finish(store: Store, job_id: int) -> None:
    assert store.finish_job(job_id, None, "succeeded")


def test_late_job_of_another_team_starts_before_the_backlog_drains(store):
    a, b = _teams(store, "a", "b")
    backlog = _queue(store, a, 6)
    running = [_claim(store), _claim(store)]  # two slots, both to team a (alone in the queue)
    assert running == backlog[:2]
    (late,) = _queue(store, b, 1)
    _finish(store, running[0])
    assert _claim(store) == late  # a still runs one job, b none: b goes first despite a's older jobs
    _finish(store, running[1])
    assert _claim(store) == backlog[2]
    assert store.get_job(backlog[-1]).status == "queued"


def test_teams_take_turns_when_they_run_as_many_jobs(store):
    a, b = _teams(store, "a", "b")
    ja = _queue(store, a, 3)
    jb = _queue(store, b, 2)
    order = []
    for _ in range(5):  # one slot: claim, finish, claim the next...
        order.append(_claim(store))
        _finish(store, order[-1])
    assert order == [ja[0], jb[0], ja[1], jb[1], ja[2]]
    assert _claim(store) is None


def test_priority_comes_before_fairness(store):
    a, b = _teams(store, "a", "b")
    _queue(store, a, 2)
    jb = _queue(store, b, 3)
    first = _claim(store)
    assert store.get_job(first).team_id == a
    (urgent,) = _queue(store, a, 1, priority=5)
    assert _claim(store) == urgent  # a runs more than b, but its job has the higher priority
    assert _claim(store) == jb[0]


def test_team_limit_holds_the_team_back_but_not_the_others(store):
    a, b = _teams(store, "a", "b")
    ja = _queue(store, a, 3)
    assert _claim(store, team_limit=1) == ja[0]
    assert _claim(store, team_limit=1) is None  # a is at its limit and nobody else is waiting
    (jb,) = _queue(store, b, 1)
    assert _claim(store, team_limit=1) == jb
    _finish(store, ja[0])
    assert _claim(store, team_limit=1) == ja[1]
    assert _claim(store) == ja[2]  # no limit: a may run two


def test_concurrent_claimers_keep_the_team_limit_and_claim_each_job_once(db_url):
    """Six schedulers, each with its own engine, claim at once from two teams' queues with a
    limit of two running jobs per team: exactly two jobs of each team start, each once."""
    first = Store(db_url)
    first.migrate()
    a, b = _teams(first, "a", "b")
    queued = {a: set(_queue(first, a, 10)), b: set(_queue(first, b, 10))}
    claimed = claim_concurrently(db_url, claimers=6, team_limit=2)
    assert len(claimed) == len(set(claimed)) == 4
    assert len(set(claimed) & queued[a]) == 2
    assert len(set(claimed) & queued[b]) == 2
    first.dispose()


def test_events_name_the_scheduler_that_claimed_and_ran_the_job(store):
    (a,) = _teams(store, "a")
    (job,) = _queue(store, a, 1)
    me = {"host": "node-7", "pid": 4242}
    _, lease = store.claim_next(scheduler=me)
    assert store.finish_job(job, lease, "succeeded", scheduler=me)
    started, done = [e for e in store.list_events(job) if e.kind in ("started", "succeeded")]
    assert started.data == {"attempt": 1, "scheduler": me}
    assert "node-7 (pid 4242)" in started.message
    assert done.data == {"scheduler": me}


@pytest.fixture
def api(tmp_path):
    """A client on a fresh app (scheduler off), a plain token and an admin token of one team."""
    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    with TestClient(app) as client:
        store = app.state.store
        plain = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        admin = {"Authorization": f"Bearer {store.create_token('alpha', admin=True)}"}
        yield client, plain, admin, store


def test_only_admin_tokens_raise_priority(api):
    client, plain, admin, store = api
    r = client.post("/v1/jobs", json={**MINIMAL, "priority": 5}, headers=plain)
    assert r.status_code == 403
    assert r.json()["detail"].startswith("priority: above 0 needs an admin token")
    assert store.list_jobs(store.team_for_token(plain["Authorization"][7:]).id) == ([], 0)
    low = client.post("/v1/jobs", json={**MINIMAL, "priority": -5}, headers=plain)
    assert low.status_code == 201
    assert low.json()["priority"] == -5
    high = client.post("/v1/jobs", json={**MINIMAL, "priority": 5}, headers=admin)
    assert high.status_code == 201
    assert high.json()["priority"] == 5
    assert client.get("/v1/me", headers=plain).json()["admin"] is False
    assert client.get("/v1/me", headers=admin).json()["admin"] is True


def test_token_create_admin_cli(tmp_path, monkeypatch, capsys):
    from secateurs import main
    from service.config import get_settings

    monkeypatch.setenv("SECATEURS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        assert main(["token", "create", "--team", "ops", "--admin"]) == 0
        admin_token = capsys.readouterr().out.strip().splitlines()[-1]
        assert main(["token", "create", "--team", "ops"]) == 0
        plain_token = capsys.readouterr().out.strip().splitlines()[-1]
        store = Store(get_settings().db_url)
        assert store.caller_for_token(admin_token)[1] is True
        assert store.caller_for_token(plain_token)[1] is False
        store.dispose()
    finally:
        get_settings.cache_clear()
