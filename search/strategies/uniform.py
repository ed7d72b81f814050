"""Uniform: one pruning rate for every searchable group, the largest network that meets the
target (found by bisection on the rate). The baseline every other strategy must beat; with
the L1 criterion it is Li et al. 2016's "prune the same fraction of each layer"."""
from __future__ import annotations

from typing import Any

from ..base import Proposal, Result
from ..space import SearchSpace, bisect_scalar
from .common import SpaceStrategy


class UniformStrategy(SpaceStrategy):
    """Bisect one rate r (the same for all searchable groups, each clipped to its bounds) to
    the smallest r whose network fits the budget, then evaluate that single policy."""

    name = "uniform"
    default_evaluator = "adaptive-bn"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        super().__init__(space, seed)
        self.rate, self.policy = bisect_scalar(space, self._policy, 0.0, space.max_rate)
        self.asked = False

    def _policy(self, rate: float) -> dict[str, float]:
        return self.space.clip({k: rate for k in self.space.keys})

    def ask(self, n: int = 1) -> list[Proposal]:
        again = self._reissued(n)
        if again or self.asked:
            return again
        self.asked = True
        return [self._propose(self.policy, "uniform", rate=self.rate)]

    def tell(self, results: list[Result]) -> None:
        self._accept(results)

    @property
    def done(self) -> bool:
        return self.asked and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self._best_of(self.history)

    def progress(self) -> dict[str, Any]:
        return {"fraction": 1.0 if self.done else 0.0, "phase": f"uniform rate {self.rate:.3f}"}

    def _extra_state(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.asked = bool(state["asked"])
