"""The job store: every read and write the API, the scheduler and the job runners make, in
short transactions. Writes on SQLite run under `BEGIN IMMEDIATE` (one writer at a time); on
PostgreSQL the queue claim uses `FOR UPDATE SKIP LOCKED` so concurrent schedulers never
take the same job. A run holds its job through a lease token (`claimed_by`): writes from a
run whose lease was lost (requeued after a missed heartbeat) are refused."""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, bindparam, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from workers.status import JobStatus

from .engine import make_engine, migrate
from .tables import INT_MAX, Artifact, Candidate, Checkpoint, Dataset, Event, Job, Model, Team, Token, utcnow

TOKEN_PREFIX = "sct_"
CLAIM_LOCK = 726355
"""PostgreSQL advisory lock key held while a scheduler claims a job (migrations use 726354)."""


def hash_token(token: str) -> str:
    """The stored form of a token (SHA-256 hex; tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def plain(value: Any) -> Any:
    """JSON-safe copy for a JSON column: numpy/torch scalars to Python numbers, tuples to
    lists, NaN and infinities to None (PostgreSQL's JSON rejects them), other objects to str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return plain(item())
    tolist = getattr(value, "tolist", None)
    return plain(tolist()) if callable(tolist) else str(value)


def storable(row_id: int) -> bool:
    """True when `row_id` fits the Integer id columns; any other id names no row (and must not
    reach PostgreSQL, which refuses it as out of range)."""
    return 0 < row_id <= INT_MAX


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PollState:
    """A job's row version (+1 on every update), candidate count and last event's seq: every
    answer dashboards poll (the job, candidates after N, events after N) is a function of
    these, because candidates and events are append-only and numbered 1, 2, ... per job."""

    version: int
    candidates: int
    last_event: int


_POLL_STATE = select(
    Job.version,
    Job.candidates_evaluated,
    select(func.coalesce(func.max(Event.seq), 0)).where(Event.job_id == Job.id).scalar_subquery(),
).where(Job.id == bindparam("job"), Job.team_id == bindparam("team"))
"""`Store.poll_state`'s query, built once."""


class LeaseLost(RuntimeError):
    """The job is no longer held by this run (requeued, cancelled or finished elsewhere)."""


class Store:
    """Data access over one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, url: str, engine: Engine | None = None, token_cache_seconds: float = 0.0) -> None:
        self.url = url
        self.token_cache_seconds = token_cache_seconds
        self._callers: dict[str, tuple[float, Team, bool]] = {}  # token hash -> (checked at, team, admin)
        self._checking: dict[str, threading.Lock] = {}  # token hash -> held while it is looked up
        self._guard = threading.Lock()
        self.engine = engine or make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(immediate=True), expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema up to date (Alembic)."""
        migrate(self.engine)

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session."""
        with self._reader() as s, s.begin():
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed on exit."""
        with self._writer() as s, s.begin():
            yield s

    # teams and tokens
    def create_token(self, team: str, admin: bool = False) -> str:
        """Make a token for `team` (creating the team); returns the plaintext, stored only hashed.
        An `admin` token may also give jobs a priority above the default."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.write() as s:
            t = s.scalar(select(Team).where(Team.name == team))
            if t is None:
                t = Team(name=team)
                s.add(t)
                s.flush()
            s.add(Token(team_id=t.id, token_hash=hash_token(token), prefix=token[:12], admin=admin))
        return token

    def revoke_token(self, token: str) -> bool:
        """Revoke a token given in full; True if it existed and was live."""
        with self.write() as s:
            row = s.scalar(select(Token).where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None)))
            if row is None:
                return False
            row.revoked_at = utcnow()
            self._callers.clear()
            return True

    def caller_for_token(self, token: str) -> tuple[Team, bool] | None:
        """The team a live token belongs to and whether the token is an admin's, or None. With
        `token_cache_seconds`, a live token is remembered that long (see `cached_caller`), and
        threads asking for one token together wait for a single lookup (a dashboard opening a
        page sends its first requests at once)."""
        if self.token_cache_seconds <= 0:
            return self._lookup_caller(hash_token(token))
        digest = hash_token(token)
        with self._guard:
            gate = self._checking.setdefault(digest, threading.Lock())
        with gate:
            try:
                return self.cached_caller(token) or self._lookup_caller(digest)
            finally:
                with self._guard:
                    self._checking.pop(digest, None)

    def _lookup_caller(self, digest: str) -> tuple[Team, bool] | None:
        """`caller_for_token` from the database, remembered when the cache is on."""
        with self.read() as s:
            row = s.execute(
                select(Team, Token.admin)
                .join(Token, Token.team_id == Team.id)
                .where(Token.token_hash == digest, Token.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        if self.token_cache_seconds > 0:
            if len(self._callers) >= 10_000:
                self._callers.clear()
            self._callers[digest] = (time.monotonic(), row[0], bool(row[1]))
        return row[0], bool(row[1])

    def cached_caller(self, token: str) -> tuple[Team, bool] | None:
        """The caller of a token checked less than `token_cache_seconds` ago, from memory (no
        database call, so the API may ask on its event loop); None if it must be checked. A
        revoke through this store forgets every token at once; one made by another process
        (the CLI) holds after at most `token_cache_seconds`."""
        hit = self._callers.get(hash_token(token))
        if hit is None or time.monotonic() - hit[0] > self.token_cache_seconds:
            return None
        return hit[1], hit[2]

    def team_for_token(self, token: str) -> Team | None:
        """The team a live token belongs to, or None."""
        caller = self.caller_for_token(token)
        return None if caller is None else caller[0]

    # models
    def add_model(self, team_id: int, **fields: Any) -> Model:
        """Record an uploaded weights file."""
        with self.write() as s:
            m = Model(team_id=team_id, **fields)
            s.add(m)
        return m

    def get_model(self, team_id: int, model_id: int) -> Model | None:
        """A team's model by id (None for another team's)."""
        if not storable(model_id):
            return None
        with self.read() as s:
            return s.scalar(select(Model).where(Model.id == model_id, Model.team_id == team_id))

    def list_models(self, team_id: int) -> list[Model]:
        """A team's uploaded models, newest first."""
        with self.read() as s:
            return list(s.scalars(select(Model).where(Model.team_id == team_id).order_by(Model.id.desc())))

    # data sets
    def add_dataset(self, team_id: int, **fields: Any) -> Dataset:
        """Record an uploaded, unpacked data set."""
        with self.write() as s:
            d = Dataset(team_id=team_id, **fields)
            s.add(d)
        return d

    def get_dataset(self, team_id: int, dataset_id: int) -> Dataset | None:
        """A team's data set by id (None for another team's)."""
        if not storable(dataset_id):
            return None
        with self.read() as s:
            return s.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.team_id == team_id))

    def list_datasets(self, team_id: int) -> list[Dataset]:
        """A team's uploaded data sets, newest first."""
        with self.read() as s:
            return list(s.scalars(select(Dataset).where(Dataset.team_id == team_id).order_by(Dataset.id.desc())))

    # jobs
    def create_job(self, team_id: int, spec: dict[str, Any], config: dict[str, Any], priority: int = 0) -> Job:
        """Queue a job."""
        with self.write() as s:
            job = Job(
                team_id=team_id, spec=spec, config=config, priority=priority, status=JobStatus.QUEUED, phase="queued"
            )
            s.add(job)
            s.flush()
            self._event(s, job.id, "queued", "job queued")
        return job

    def get_job(self, job_id: int, team_id: int | None = None) -> Job | None:
        """A job by id, restricted to `team_id` when given."""
        if not storable(job_id):
            return None
        with self.read() as s:
            q = select(Job).where(Job.id == job_id)
            if team_id is not None:
                q = q.where(Job.team_id == team_id)
            return s.scalar(q)

    def list_jobs(
        self, team_id: int, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Job], int]:
        """A page of a team's jobs (newest first) and the total matching."""
        with self.read() as s:
            cond = [Job.team_id == team_id] + ([Job.status == status] if status else [])
            total = s.scalar(select(func.count()).select_from(Job).where(*cond)) or 0
            rows = s.scalars(select(Job).where(*cond).order_by(Job.id.desc()).limit(limit).offset(offset))
            return list(rows), int(total)

    def request_cancel(self, job_id: int, team_id: int) -> Job | None:
        """Cancel a job: a queued one at once, a running one by flagging it for its runner."""
        if not storable(job_id):
            return None
        with self.write() as s:
            job = s.scalar(self._lock(select(Job).where(Job.id == job_id, Job.team_id == team_id)))
            if job is None:
                return None
            if job.status is JobStatus.QUEUED:
                self._move(s, job, JobStatus.CANCELLED, "cancelled before it started")
            elif job.status is JobStatus.RUNNING and not job.cancel_requested:
                job.cancel_requested = True
                self._event(s, job.id, "cancel", "cancel requested")
        return job

    def _lock(self, q):
        return q.with_for_update() if self.is_postgres else q

    def _move(
        self,
        s: Session,
        job: Job,
        to: JobStatus,
        message: str,
        kind: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """`job.move(to, **fields)` (the transition table's check) and its event, `kind`
        defaulting to the new status."""
        job.move(to, **fields)
        self._event(s, job.id, kind or to.value, message, data)

    def claim_next(self, scheduler: dict[str, Any] | None = None, team_limit: int = 0) -> tuple[Job, str] | None:
        """Atomically take the next queued job, fair across teams: the highest priority first;
        within a priority, the team with the fewest running jobs (over every scheduler), then
        the team whose turn is oldest (round-robin), then the oldest job. Teams already running
        `team_limit` jobs (0: no limit) wait. Returns the job with the run's lease token, or
        None when nothing may start. `scheduler` ({"host", "pid"}) is recorded in the job's
        "started" event."""
        lease = uuid.uuid4().hex
        with self.write() as s:  # SQLite: BEGIN IMMEDIATE, so no other writer runs between pick and move
            if self.is_postgres:  # one claim at a time, so the running counts are exact; SKIP LOCKED still
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})  # keeps rows single-owner
            job = s.scalar(self._fair_pick(team_limit))
            if job is None:
                return None
            job.move(JobStatus.RUNNING, lease=lease)
            s.execute(update(Team).where(Team.id == job.team_id).values(last_claimed_at=utcnow()))
            where = f" on {scheduler['host']} (pid {scheduler['pid']})" if scheduler else ""
            data = {"attempt": job.attempts, **({"scheduler": scheduler} if scheduler else {})}
            self._event(s, job.id, "started", f"run {job.attempts} started{where}", data)
        return job, lease

    def _fair_pick(self, team_limit: int) -> Select[Job]:
        """The query for the next job `claim_next` takes (see there), locking it on PostgreSQL."""
        running = (
            select(Job.team_id, func.count().label("n"))
            .where(Job.status == JobStatus.RUNNING)
            .group_by(Job.team_id)
            .subquery()
        )
        n_running = func.coalesce(running.c.n, 0)
        pick = (
            select(Job)
            .join(Team, Team.id == Job.team_id)
            .outerjoin(running, running.c.team_id == Job.team_id)
            .where(Job.status == JobStatus.QUEUED)
            .order_by(Job.priority.desc(), n_running, Team.last_claimed_at.asc().nulls_first(), Job.created_at, Job.id)
            .limit(1)
        )
        if team_limit > 0:
            pick = pick.where(n_running < team_limit)
        return pick.with_for_update(of=Job, skip_locked=True) if self.is_postgres else pick

    def _held(self, s: Session, job_id: int, lease: str) -> Job:
        job = s.scalar(self._lock(select(Job).where(Job.id == job_id)))
        if job is None or job.status is not JobStatus.RUNNING or job.claimed_by != lease:
            raise LeaseLost(f"job {job_id} is no longer held by this run")
        return job

    def heartbeat(self, job_id: int, lease: str) -> bool:
        """Mark the run alive; returns True if a cancel was requested. Raises LeaseLost."""
        with self.write() as s:
            job = self._held(s, job_id, lease)
            job.heartbeat_at = utcnow()
            return bool(job.cancel_requested)

    def cancel_requested(self, job_id: int) -> bool:
        """True if the job was asked to stop (or is no longer running)."""
        with self.read() as s:
            row = s.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
            return row is None or row.status is not JobStatus.RUNNING or bool(row.cancel_requested)

    def add_candidate(self, job_id: int, lease: str, result: dict[str, Any]) -> int | None:
        """Store an evaluated candidate with the next sequence number; None if this proposal is
        already stored (a resumed run replaying it)."""
        with self.write() as s:
            job = self._held(s, job_id, lease)
            pid = int(result["proposal_id"])
            if (
                s.scalar(select(Candidate.seq).where(Candidate.job_id == job_id, Candidate.proposal_id == pid))
                is not None
            ):
                return None
            seq = job.candidates_evaluated + 1
            s.add(
                Candidate(
                    job_id=job_id,
                    seq=seq,
                    proposal_id=pid,
                    phase=str(result.get("phase", "search")),
                    policy=plain(result.get("policy", {})),
                    score=float(result["score"]),
                    flops=int(result.get("flops") or 0),
                    params=int(result.get("params") or 0),
                    memory_bytes=int(result.get("memory_bytes") or 0),
                    latency_ms=result.get("latency_ms"),
                    wall_seconds=float(result.get("wall_seconds") or 0.0),
                    meta=plain(result.get("meta") or {}),
                )
            )
            job.candidates_evaluated = seq
            return seq

    def stored_results(self, job_id: int) -> list[dict[str, Any]]:
        """Every stored candidate of a job as a result dict (for resuming without re-evaluating)."""
        with self.read() as s:
            rows = s.scalars(select(Candidate).where(Candidate.job_id == job_id).order_by(Candidate.seq))
            return [candidate_dict(c) for c in rows]

    def update_progress(
        self,
        job_id: int,
        lease: str,
        phase: str | None = None,
        progress: float | None = None,
        best: dict[str, Any] | None = None,
    ) -> None:
        """Record where a running job stands."""
        with self.write() as s:
            job = self._held(s, job_id, lease)
            if phase is not None:
                job.phase = phase[:128]
            if progress is not None:
                job.progress = max(job.progress, min(1.0, float(progress)))  # monotone, also across a resume
            if best is not None:
                job.best = plain(best)

    def add_event(self, job_id: int, kind: str, message: str = "", data: dict[str, Any] | None = None) -> int:
        """Append an event to a job's log; returns its sequence number."""
        with self.write() as s:
            s.scalar(self._lock(select(Job.id).where(Job.id == job_id)))
            return self._event(s, job_id, kind, message, data)

    @staticmethod
    def _event(s: Session, job_id: int, kind: str, message: str = "", data: dict[str, Any] | None = None) -> int:
        seq = (s.scalar(select(func.max(Event.seq)).where(Event.job_id == job_id)) or 0) + 1
        s.add(Event(job_id=job_id, seq=seq, kind=kind[:32], message=message, data=plain(data or {})))
        return seq

    def save_checkpoint(self, job_id: int, lease: str, state: bytes) -> None:
        """Keep the strategy's latest state for a resume."""
        with self.write() as s:
            self._held(s, job_id, lease)
            row = s.get(Checkpoint, job_id)
            if row is None:
                s.add(Checkpoint(job_id=job_id, state=state))
            else:
                row.state, row.updated_at = state, utcnow()

    def load_checkpoint(self, job_id: int) -> bytes | None:
        """The saved strategy state, if any."""
        with self.read() as s:
            row = s.get(Checkpoint, job_id)
            return bytes(row.state) if row is not None else None

    def finish_job(
        self,
        job_id: int,
        lease: str | None,
        status: JobStatus | str,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
        traceback: str | None = None,
        artifacts: list[dict[str, Any]] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> bool:
        """Move a running job to a final status (only from the run holding it when `lease` is
        given); returns False if the job was not ours to finish (gone, already final, or held
        by another lease). A status that is not final raises ValueError; a move the table
        forbids (a queued job to succeeded, with no lease) raises IllegalTransition. The
        scheduler that ran it ({"host", "pid"}), when given, goes in the final event."""
        status = JobStatus(status)
        if not status.final:
            raise ValueError(f"job {job_id}: finish_job takes a final status, not {status}")
        with self.write() as s:
            job = s.scalar(self._lock(select(Job).where(Job.id == job_id)))
            if job is None or job.status.final or (lease is not None and job.claimed_by != lease):
                return False
            msg = {JobStatus.SUCCEEDED: "job succeeded", JobStatus.CANCELLED: "job cancelled"}.get(
                status, f"job failed: {error}"
            )
            self._move(s, job, status, msg, data={"scheduler": scheduler} if scheduler else None)
            job.summary, job.error, job.traceback = plain(summary), error, traceback
            for a in artifacts or []:
                s.add(Artifact(job_id=job_id, **a))
            return True

    def release(self, job_id: int, lease: str, reason: str) -> bool:
        """Put a job this run holds back in the queue at once (its server is stopping); the
        next claim resumes it."""
        with self.write() as s:
            job = s.scalar(self._lock(select(Job).where(Job.id == job_id)))
            if job is None or job.status is not JobStatus.RUNNING or job.claimed_by != lease:
                return False
            if job.cancel_requested:
                self._move(s, job, JobStatus.CANCELLED, "job cancelled")
            else:
                self._move(s, job, JobStatus.QUEUED, reason, kind="requeued")
            return True

    def requeue_stale(self, stale_after: float, max_attempts: int) -> list[int]:
        """Requeue running jobs whose heartbeat is older than `stale_after` seconds (their run
        died); fail those that already used `max_attempts` runs. Returns the ids touched."""
        cutoff = utcnow() - timedelta(seconds=stale_after)
        touched = []
        with self.write() as s:
            q = select(Job).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
            q = q.with_for_update(skip_locked=True) if self.is_postgres else q
            for job in s.scalars(q):
                touched.append(job.id)
                if job.cancel_requested:
                    self._move(s, job, JobStatus.CANCELLED, "job cancelled (its run had stopped)")
                elif job.attempts >= max_attempts:
                    job.error = f"the job's worker stopped responding {job.attempts} times; giving up"
                    self._move(s, job, JobStatus.FAILED, job.error)
                else:
                    self._move(
                        s, job, JobStatus.QUEUED, "worker stopped responding; job requeued to resume", kind="requeued"
                    )
        return touched

    def list_candidates(self, job_id: int, after: int = 0, limit: int = 500) -> list[Candidate]:
        """Candidates with seq > after, in order."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(Candidate)
                    .where(Candidate.job_id == job_id, Candidate.seq > after)
                    .order_by(Candidate.seq)
                    .limit(limit)
                )
            )

    def list_events(self, job_id: int, after: int = 0, limit: int = 500) -> list[Event]:
        """Events with seq > after, in order."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(Event).where(Event.job_id == job_id, Event.seq > after).order_by(Event.seq).limit(limit)
                )
            )

    def poll_state(self, job_id: int, team_id: int) -> PollState | None:
        """What a team's job's polled answers are made of (`PollState`), in one query on a
        plain connection (no ORM session: it runs for every poll), or None for no such job of
        the team. The last event's seq comes from the (job_id, seq) index."""
        if not storable(job_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(_POLL_STATE, {"job": job_id, "team": team_id}).first()
        return None if row is None else PollState(int(row[0]), int(row[1]), int(row[2]))

    def list_artifacts(self, job_id: int) -> list[Artifact]:
        """A job's output files."""
        with self.read() as s:
            return list(s.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))

    def job_counts(self) -> dict[str, int]:
        """Jobs per status (all teams), for /metrics."""
        with self.read() as s:
            return {st.value: int(n) for st, n in s.execute(select(Job.status, func.count()).group_by(Job.status))}

    def candidate_totals(self) -> tuple[int, float]:
        """Candidates evaluated and evaluation seconds summed over all jobs, for /metrics."""
        with self.read() as s:
            n, secs = s.execute(
                select(func.count(Candidate.id), func.coalesce(func.sum(Candidate.wall_seconds), 0.0))
            ).one()
            return int(n), float(secs)


def candidate_dict(c: Candidate) -> dict[str, Any]:
    """A stored candidate in the shape of `search.base.Result.as_dict()` plus its `seq`."""
    return {
        "seq": c.seq,
        "proposal_id": c.proposal_id,
        "policy": c.policy,
        "score": c.score,
        "flops": c.flops,
        "params": c.params,
        "memory_bytes": c.memory_bytes,
        "latency_ms": c.latency_ms,
        "phase": c.phase,
        "wall_seconds": c.wall_seconds,
        "meta": c.meta,
    }
