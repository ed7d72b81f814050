"""A job's status and the moves between statuses, declared once.

    queued  → running | cancelled
    running → succeeded | failed | cancelled | queued   (queued again: stale heartbeat or server stop)

succeeded, failed and cancelled are final. Declared here, in the lowest layer that needs it: a
job's run reports its outcome as one (workers/jobrun.py); the service stores it, and `Job.move`
(service/store/tables.py) is the one place that changes a job's status, checking the move with
`check_move`. The values are the strings stored in the database, shown by the API and served to
the dashboard; `JobStatus` is a `StrEnum`, so a member compares, hashes, formats and serialises
as its string."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's status: queued, running, then succeeded, failed or cancelled (final). A running
    job may go back to queued when its run stopped (it resumes on the next claim)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for succeeded, failed and cancelled: no move leaves them."""
        return not TRANSITIONS[self]


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
"""The legal moves: each status to the statuses it may go to next."""

FINAL: frozenset[JobStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(ValueError):
    """A move the transition table does not allow, e.g. "job 7: cannot go from succeeded to running"."""

    def __init__(self, job_id: int | None, current: JobStatus | str, to: JobStatus | str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {to}")
        self.job_id, self.current, self.to = job_id, current, to


def check_move(job_id: int | None, current: JobStatus | str, to: JobStatus | str) -> JobStatus:
    """`to` as a JobStatus if `current → to` is legal; raises IllegalTransition if not, and
    ValueError for a string that is no status."""
    current, to = JobStatus(current), JobStatus(to)
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(job_id, current, to)
    return to
