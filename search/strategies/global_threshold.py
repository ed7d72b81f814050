"""Global threshold: one importance threshold across all layers (the survey's "global
importance ranking"); a layer with more low-importance channels is cut harder, without
per-layer rates being chosen by hand. Structured: whole channels are ranked, with the
criterion's scores normalised per group (mean 1) so layers compare, as Torch-Pruning's
global pruning does. The threshold (as the fraction of all channels under it) is bisected
until the target is met."""
from __future__ import annotations

from typing import Any

from pruning.cut import global_threshold_policy

from ..base import Proposal, Result
from ..space import SearchSpace, bisect_scalar
from .common import SpaceStrategy


class GlobalThresholdStrategy(SpaceStrategy):
    """Bisect the global cut fraction r: channels of the searchable groups whose normalised
    score falls in the lowest r of all are cut (each group clipped to its bounds); evaluate
    the largest network that fits the budget."""

    name = "global"
    default_evaluator = "adaptive-bn"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        super().__init__(space, seed)
        all_scores = space.channel_scores()
        self.scores = {k: all_scores[k] for k in space.keys}
        self.rate, self.policy = bisect_scalar(space, self._policy, 0.0, 0.999)
        self.asked = False

    def _policy(self, rate: float) -> dict[str, float]:
        kept = global_threshold_policy(self.scores, min(rate, 0.999))
        return self.space.clip({k: self.space.rate_for_kept(k, n) for k, n in kept.items()})

    def ask(self, n: int = 1) -> list[Proposal]:
        again = self._reissued(n)
        if again or self.asked:
            return again
        self.asked = True
        return [self._propose(self.policy, "global", threshold_fraction=self.rate)]

    def tell(self, results: list[Result]) -> None:
        self._accept(results)

    @property
    def done(self) -> bool:
        return self.asked and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self._best_of(self.history)

    def progress(self) -> dict[str, Any]:
        return {"fraction": 1.0 if self.done else 0.0, "phase": f"global threshold at {self.rate:.3f} of channels"}

    def _extra_state(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.asked = bool(state["asked"])
