"""Search strategies over per-layer pruning rates (ask/tell) and the evaluators that score them.
Nothing here knows of Ray or HTTP."""
from .base import Proposal, Result, SearchError, Strategy

__all__ = ["Proposal", "Result", "SearchError", "Strategy"]
