"""Search strategies over per-layer pruning rates (ask/tell) and the evaluators that score them.

Importing this package imports every strategy and evaluator module, so `search.registry.STRATEGIES`
and `search.evaluators.EVALUATORS` are complete after `import search`, whatever was imported
first. Ray is never imported here: AMC's RLlib agents (`search.amc.rllib_agent`) load it only
when one is chosen, and distributed execution lives in `workers`. HTTP lives in `service`."""

from .base import Proposal, Result, SearchError, Strategy

# Registration: the built-in evaluators, the built-in strategies, then the modules that add a
# strategy and an evaluator each; this order is `list_strategies()`'s order (so not sorted).
# isort: off
from . import evaluators, strategies  # noqa: F401
from . import amc, metapruning, autoslim  # noqa: F401
# isort: on

__all__ = ["Proposal", "Result", "SearchError", "Strategy"]
