"""Search strategies over per-layer pruning rates (ask/tell) and the evaluators that score them.

The registries (`search.registry.STRATEGIES`, `search.evaluators.EVALUATORS`) import the
modules that fill them on their first lookup, so they are complete whatever was imported
first. Ray is never imported here: AMC's RLlib agents (`search.strategies.amc.rllib_agent`) load
it only when one is chosen, and distributed execution lives in `workers`. HTTP lives in `service`."""

from .base import Proposal, Result, SearchError
from .strategies.base import Strategy

__all__ = ["Proposal", "Result", "SearchError", "Strategy"]
