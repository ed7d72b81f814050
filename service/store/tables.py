"""The SQL schema (SQLAlchemy 2 declarative): teams and their tokens, uploaded models and data
sets, jobs,
their candidates, events and artifacts, and each job's strategy checkpoint. Alembic
migrations in `service/migrations` create it; keep both in step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from workers.status import FINAL, JobStatus, check_move

INT_MAX = 2**31 - 1
"""The largest value an `Integer` column (ids, sequence numbers) holds on every backend
(PostgreSQL's int4): larger ids name no row, larger sequence numbers are refused at the door."""

JOB_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus)
FINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus if s in FINAL)


def utcnow() -> datetime:
    """Timezone-aware now, the one clock every row uses."""
    return datetime.now(UTC)


class StatusColumn(TypeDecorator):
    """A job status in a VARCHAR(16) column (the schema is unchanged): `JobStatus` in, the
    enum back out; a string that is no status is refused before it reaches the database."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else JobStatus(value).value

    def process_result_value(self, value: Any, dialect: Any) -> JobStatus | None:
        return None if value is None else JobStatus(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_claimed_at: Mapped[datetime | None] = mapped_column(nullable=True)  # the queue's round-robin turn


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # may raise priorities
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    zoo: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """An uploaded image folder or mask folder archive, unpacked under `path` (`service.archive`)."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)  # of the archive
    sha256: Mapped[str] = mapped_column(String(64))  # of the archive
    layout: Mapped[str] = mapped_column(String(16))  # flat (<class>/) or split (train/ + val/, test/)
    classes: Mapped[list[str]] = mapped_column(JSON)  # in label order
    in_channels: Mapped[int] = mapped_column(Integer)
    images: Mapped[dict[str, Any]] = mapped_column(default=dict)  # split -> image count
    # what the set is for: classification (class folders), segmentation (images/ + masks/) or
    # detection (a YOLO or COCO layout)
    task: Mapped[str] = mapped_column(String(32), default="classification", server_default="classification")
    # detection: the label format and what reading the labels counted (objects, clipped, skipped)
    boxes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    config: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[JobStatus] = mapped_column(StatusColumn(), default=JobStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str] = mapped_column(String(128), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    candidates_evaluated: Mapped[int] = mapped_column(Integer, default=0)
    best: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # +1 in the database on every UPDATE of the row: what the job's ETag is made of (one
    # integer names every state of the row; `Store.poll_state` reads it without loading the job)
    version: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"), onupdate=literal_column("version") + 1
    )

    # the new version comes back with the UPDATE (ClassVar would clash with SQLAlchemy's own typing)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012
    __table_args__ = (
        Index("ix_jobs_queue", "status", "priority", "created_at"),
        Index("ix_jobs_status_team", "status", "team_id"),  # running jobs per team, for the fair claim
    )

    def move(
        self, to: JobStatus | str, *, lease: str | None = None, phase: str | None = None, now: datetime | None = None
    ) -> JobStatus:
        """The one way a job changes status: checks `status → to` against the transition table
        (`IllegalTransition` if it is not allowed) and sets what goes with it. To running:
        the run's `lease` (required), started_at (first run only), heartbeat_at, attempts + 1.
        Back to queued: no lease. To a final status: finished_at, no lease, and progress 1.0 on
        success. `phase` defaults to "starting", "queued (resume)" or the status. Returns the
        status the job had."""
        before = JobStatus(self.status)
        to = check_move(self.id, before, to)
        now = now or utcnow()
        if to is JobStatus.RUNNING:
            if not lease:
                raise ValueError(f"job {self.id}: a move to running needs the run's lease")
            self.claimed_by, self.heartbeat_at = lease, now
            self.started_at = self.started_at or now
            self.attempts = (self.attempts or 0) + 1
            default_phase = "starting"
        elif to is JobStatus.QUEUED:
            self.claimed_by = None
            default_phase = "queued (resume)"
        else:
            self.claimed_by, self.finished_at = None, now
            if to is JobStatus.SUCCEEDED:
                self.progress = 1.0
            default_phase = to.value
        self.status = to
        self.phase = (phase or default_phase)[:128]
        return before


class Candidate(Base):
    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    proposal_id: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(64), default="search")
    policy: Mapped[dict[str, Any]] = mapped_column()
    score: Mapped[float] = mapped_column(Float)
    flops: Mapped[int] = mapped_column(BigInteger, default=0)
    params: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_candidates_job_seq"),
        UniqueConstraint("job_id", "proposal_id", name="uq_candidates_job_proposal"),
    )


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_events_job_seq"),)


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
