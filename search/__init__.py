"""Search strategies over per-layer pruning rates (ask/tell) and the evaluators that score them.

Importing this package imports every strategy and evaluator module, so `search.registry.STRATEGIES`
and `search.evaluators.EVALUATORS` are complete after `import search`, whatever was imported
first. Ray is never imported here: AMC's RLlib agents (`search.strategies.amc.rllib_agent`) load
it only when one is chosen, and distributed execution lives in `workers`. HTTP lives in `service`."""

# Registration: the built-in evaluators, then every strategy (`search.strategies` imports them
# in `list_strategies()`'s order, which is not sorted).
from . import evaluators, strategies  # noqa: F401
from .base import Proposal, Result, SearchError
from .strategies.base import Strategy

__all__ = ["Proposal", "Result", "SearchError", "Strategy"]
