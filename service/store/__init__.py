"""The SQL store: schema, engines and migrations, and the data-access `Store`."""
from .store import LeaseLost, Store, as_utc, candidate_dict, hash_token
from .tables import FINAL_STATUSES, JOB_STATUSES

__all__ = ["FINAL_STATUSES", "JOB_STATUSES", "LeaseLost", "Store", "as_utc", "candidate_dict", "hash_token"]
