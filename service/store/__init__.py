"""The SQL store: schema, engines and migrations, the data-access `Store`, and the job statuses
with their legal moves (declared in `workers.status`, where a job's run reports its outcome)."""

from workers.status import FINAL, TRANSITIONS, IllegalTransition, JobStatus, check_move

from .store import LeaseLost, PollState, Store, as_utc, candidate_dict, hash_token
from .tables import FINAL_STATUSES, JOB_STATUSES

__all__ = [
    "FINAL",
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "TRANSITIONS",
    "IllegalTransition",
    "JobStatus",
    "LeaseLost",
    "PollState",
    "Store",
    "as_utc",
    "candidate_dict",
    "check_move",
    "hash_token",
]
