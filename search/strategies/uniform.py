"""Uniform: one pruning rate for every searchable group, the largest network that meets the
target (found by bisection on the rate). The baseline every other strategy must beat; with
the L1 criterion it is Li et al. 2016's "prune the same fraction of each layer"."""

from __future__ import annotations

from ..registry import register_strategy
from ..space import SearchSpace
from .common import OneShotStrategy


@register_strategy("uniform")
class UniformStrategy(OneShotStrategy):
    """Bisect one rate r (the same for all searchable groups, each clipped to its bounds) to
    the smallest r whose network fits the budget, then evaluate that single policy."""

    name = "uniform"
    phase = "uniform"
    default_evaluator = "adaptive-bn"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        super().__init__(space, seed, upper=space.max_rate)

    def _policy(self, rate: float) -> dict[str, float]:
        return self.space.clip(dict.fromkeys(self.space.keys, rate))

    def _describe(self) -> str:
        return f"uniform rate {self.rate:.3f}"
