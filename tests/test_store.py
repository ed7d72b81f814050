"""The job store on SQLite and PostgreSQL: migrations, tokens, the queue claim and its
order, leases, candidates without gaps or duplicates, stale-job requeue, cancel; and the job
status transition table (every legal move, every illegal one refused)."""

from __future__ import annotations

import ast
import itertools
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError
from test_service_support import claim_concurrently

from service.store import TRANSITIONS, IllegalTransition, JobStatus, LeaseLost, Store, hash_token
from service.store.tables import FINAL_STATUSES, JOB_STATUSES, Job, Token

LEGAL = [(a, b) for a, nxt in TRANSITIONS.items() for b in sorted(nxt)]
ILLEGAL = [(a, b) for a, b in itertools.product(JobStatus, JobStatus) if b not in TRANSITIONS[a]]


def _result(pid: int, score: float = 0.5) -> dict:
    return {
        "proposal_id": pid,
        "policy": {"conv1": 0.25},
        "score": score,
        "flops": 1000 + pid,
        "params": 10,
        "memory_bytes": 20,
        "latency_ms": None,
        "phase": "search",
        "wall_seconds": 0.1,
        "meta": {},
    }


def test_migrations_create_schema_and_are_idempotent(store):
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "teams",
        "tokens",
        "models",
        "jobs",
        "candidates",
        "events",
        "artifacts",
        "checkpoints",
        "alembic_version",
    } <= tables
    with store.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head_revision()


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from service.store.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def test_migrations_match_the_tables(store):
    """Alembic's autogenerate finds nothing to change between the migrated database and
    `service.store.tables` (every column, index and constraint is in a migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.store.tables import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_tokens_are_stored_hashed_and_revocable(store):
    token = store.create_token("vision")
    assert store.team_for_token(token).name == "vision"
    with store.read() as s:
        rows = list(s.scalars(select(Token)))
    assert len(rows) == 1
    assert rows[0].token_hash == hash_token(token)
    assert token not in rows[0].token_hash
    assert store.team_for_token(token + "x") is None
    assert store.revoke_token(token) is True
    assert store.team_for_token(token) is None
    assert store.revoke_token(token) is False


def test_claim_order_is_priority_then_age(store):
    team = store.team_for_token(store.create_token("a")).id
    low = store.create_job(team, {}, {}, priority=0)
    high = store.create_job(team, {}, {}, priority=5)
    low2 = store.create_job(team, {}, {}, priority=0)
    order = [store.claim_next()[0].id for _ in range(3)]
    assert order == [high.id, low.id, low2.id]
    assert store.claim_next() is None
    job = store.get_job(high.id)
    assert job.status == "running"
    assert job.attempts == 1
    assert job.started_at is not None


def test_candidates_get_contiguous_ids_and_replays_are_dropped(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    seqs = [store.add_candidate(job.id, lease, _result(pid)) for pid in (0, 1, 2)]
    assert seqs == [1, 2, 3]
    assert store.add_candidate(job.id, lease, _result(1)) is None
    assert [c.seq for c in store.list_candidates(job.id)] == [1, 2, 3]
    assert [c.seq for c in store.list_candidates(job.id, after=2)] == [3]
    assert store.get_job(job.id).candidates_evaluated == 3


def test_lost_lease_refuses_writes_and_stale_jobs_are_requeued(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    store.add_candidate(job.id, lease, _result(0))
    time.sleep(0.3)
    assert store.requeue_stale(stale_after=0.1, max_attempts=3) == [job.id]
    assert store.get_job(job.id).status == "queued"
    with pytest.raises(LeaseLost):
        store.heartbeat(job.id, lease)
    with pytest.raises(LeaseLost):
        store.add_candidate(job.id, lease, _result(1))
    claimed, lease2 = store.claim_next()
    assert claimed.id == job.id
    assert claimed.attempts == 2
    assert lease2 != lease
    assert store.add_candidate(job.id, lease2, _result(0)) is None
    assert store.add_candidate(job.id, lease2, _result(1)) == 2
    assert store.finish_job(job.id, lease, "succeeded") is False
    assert store.finish_job(job.id, lease2, "succeeded", summary={"ok": 1}) is True
    assert store.get_job(job.id).status == "succeeded"


def test_requeue_gives_up_after_max_attempts(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    store.claim_next()
    time.sleep(0.2)
    store.requeue_stale(stale_after=0.1, max_attempts=1)
    failed = store.get_job(job.id)
    assert failed.status == "failed"
    assert "stopped responding" in failed.error


def test_cancel_queued_at_once_running_by_flag(store):
    team = store.team_for_token(store.create_token("a")).id
    queued = store.create_job(team, {}, {})
    assert store.request_cancel(queued.id, team).status == "cancelled"
    running = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    assert store.heartbeat(running.id, lease) is False
    store.request_cancel(running.id, team)
    assert store.heartbeat(running.id, lease) is True
    assert store.request_cancel(running.id, team + 1) is None
    kinds = [e.kind for e in store.list_events(running.id)]
    assert kinds == ["queued", "started", "cancel"]


def test_checkpoint_round_trip_and_team_scoping(store):
    a = store.team_for_token(store.create_token("a")).id
    b = store.team_for_token(store.create_token("b")).id
    job = store.create_job(a, {"x": 1}, {"x": 1})
    _, lease = store.claim_next()
    store.save_checkpoint(job.id, lease, b"one")
    store.save_checkpoint(job.id, lease, b"two")
    assert store.load_checkpoint(job.id) == b"two"
    assert store.get_job(job.id, a) is not None
    assert store.get_job(job.id, b) is None
    assert store.list_jobs(b) == ([], 0)
    items, total = store.list_jobs(a, status="running")
    assert total == 1
    assert items[0].id == job.id


def test_concurrent_claims_never_hand_one_job_to_two_claimers(db_url):
    """Six schedulers, each with its own engine, drain one queue at once: every job is claimed
    exactly once (SKIP LOCKED on PostgreSQL, the single-writer UPDATE on SQLite)."""
    first = Store(db_url)
    first.migrate()
    team = first.team_for_token(first.create_token("a")).id
    ids = {first.create_job(team, {}, {}, priority=i % 3).id for i in range(30)}
    claimed = claim_concurrently(db_url, claimers=6)
    assert sorted(claimed) == sorted(ids)
    with first.read() as s:
        assert s.scalar(select(Job).where(Job.status != "running")) is None
    first.dispose()


def test_release_requeues_at_once_or_cancels_if_asked(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    assert store.release(job.id, "not-the-lease", "x") is False
    assert store.release(job.id, lease, "server stopped") is True
    assert store.get_job(job.id).status == "queued"
    assert store.list_events(job.id)[-1].kind == "requeued"
    _, lease2 = store.claim_next()
    store.request_cancel(job.id, team)
    assert store.release(job.id, lease2, "server stopped") is True
    assert store.get_job(job.id).status == "cancelled"


def test_json_columns_take_numpy_values_and_non_finite_floats(store):
    import numpy as np

    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    r = {
        **_result(0),
        "policy": {"conv1": np.float32(0.5)},
        "meta": {"n": np.int64(3), "bad": float("nan"), "t": (1, 2)},
    }
    store.add_candidate(job.id, lease, r)
    assert store.finish_job(job.id, lease, "succeeded", summary={"acc": np.float64(0.9), "inf": float("inf")})
    c = store.list_candidates(job.id)[0]
    assert c.policy == {"conv1": 0.5}
    assert c.meta == {"n": 3, "bad": None, "t": [1, 2]}
    assert store.get_job(job.id).summary == {"acc": 0.9, "inf": None}


def test_transition_table_is_the_documented_one():
    Q, R, S, F, C = JobStatus
    assert {Q: {R, C}, R: {S, F, C, Q}, S: set(), F: set(), C: set()} == TRANSITIONS
    assert [s.final for s in JobStatus] == [False, False, True, True, True]
    assert JOB_STATUSES == ("queued", "running", "succeeded", "failed", "cancelled")
    assert FINAL_STATUSES == (
        "succeeded",
        "failed",
        "cancelled",
    )
    assert JobStatus("queued") is Q
    assert f"{Q}" == "queued"
    assert {"queued": 1}[Q] == 1


@pytest.mark.parametrize("before,after", LEGAL, ids=[f"{a}-{b}" for a, b in LEGAL])
def test_every_legal_move_applies_its_fields(before, after):
    job = Job(
        id=7, status=before, phase="x", attempts=1, progress=0.5, claimed_by="old" if before == "running" else None
    )
    assert job.move(after, lease="new") is before
    assert job.status is after
    if after is JobStatus.RUNNING:
        assert (job.claimed_by, job.attempts, job.phase) == ("new", 2, "starting")
        assert job.started_at is not None
        assert job.heartbeat_at is not None
        assert job.finished_at is None
    elif after is JobStatus.QUEUED:
        assert (job.claimed_by, job.phase, job.finished_at) == (None, "queued (resume)", None)
    else:
        assert job.claimed_by is None
        assert job.finished_at is not None
        assert job.phase == after.value
        assert job.progress == (1.0 if after is JobStatus.SUCCEEDED else 0.5)


@pytest.mark.parametrize("before,after", ILLEGAL, ids=[f"{a}-{b}" for a, b in ILLEGAL])
def test_every_illegal_move_is_refused_and_changes_nothing(before, after):
    job = Job(id=7, status=before, phase="x", claimed_by="lease")
    with pytest.raises(IllegalTransition, match=f"^job 7: cannot go from {before} to {after}$"):
        job.move(after, lease="new")
    assert (job.status, job.phase, job.claimed_by, job.finished_at) == (before, "x", "lease", None)


def test_move_needs_a_lease_to_run_and_a_real_status():
    with pytest.raises(ValueError, match="needs the run's lease"):
        Job(id=1, status=JobStatus.QUEUED).move(JobStatus.RUNNING)
    with pytest.raises(ValueError, match="'done' is not a valid JobStatus"):
        Job(id=1, status=JobStatus.RUNNING).move("done")
    assert isinstance(IllegalTransition(1, "a", "b"), ValueError)


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
def test_finish_job_moves_a_running_job_once(store, final):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    _, lease = store.claim_next()
    assert store.finish_job(job.id, lease, final, error="e" if final == "failed" else None) is True
    done = store.get_job(job.id)
    assert done.status is JobStatus(final)
    assert done.phase == final
    assert done.finished_at is not None
    assert done.claimed_by is None
    assert store.list_events(job.id)[-1].kind == final
    # a final job is not ours to finish again: False, not an error, and nothing changes
    for again in FINAL_STATUSES:
        assert store.finish_job(job.id, lease, again) is False
        assert store.finish_job(job.id, None, again) is False
    assert store.get_job(job.id).status is JobStatus(final)
    assert store.finish_job(job.id + 100, lease, final) is False  # no such job


def test_finish_job_refuses_a_non_final_status_and_an_illegal_move(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    with pytest.raises(ValueError, match=f"job {job.id}: finish_job takes a final status, not running"):
        store.finish_job(job.id, None, JobStatus.RUNNING)
    with pytest.raises(IllegalTransition, match=f"job {job.id}: cannot go from queued to succeeded"):
        store.finish_job(job.id, None, "succeeded")  # a queued job never ran: it cannot succeed
    assert store.get_job(job.id).status is JobStatus.QUEUED
    assert store.finish_job(job.id, None, "cancelled") is True  # queued → cancelled is legal


def test_stored_status_is_the_enum_and_unknown_strings_are_refused(store):
    team = store.team_for_token(store.create_token("a")).id
    job = store.create_job(team, {}, {})
    with store.read() as s:
        assert s.execute(text("SELECT status FROM jobs")).scalar() == "queued"  # the stored string is unchanged
    assert store.get_job(job.id).status is JobStatus.QUEUED
    assert store.list_jobs(team, status=JobStatus.QUEUED)[1] == 1
    assert store.list_jobs(team, status="queued")[1] == 1
    assert store.job_counts() == {"queued": 1}
    with pytest.raises(StatementError, match="'done' is not a valid JobStatus"):
        store.list_jobs(team, status="done")


def test_no_assert_checks_a_status_in_the_service():
    """Status checks raise real errors (asserts vanish under `python -O`)."""
    root = Path(__file__).resolve().parents[1] / "service"
    found = [
        f"{path.relative_to(root.parent)}:{node.lineno}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Assert) and "status" in ast.unparse(node.test).lower()
    ]
    assert not found, found
