"""Global threshold: one importance threshold across all layers (the survey's "global
importance ranking"); a layer with more low-importance channels is cut harder, without
per-layer rates being chosen by hand. Structured: whole channels are ranked, with the
criterion's scores normalised per group (mean 1; raw |gamma| for Slimming) so layers compare, as Torch-Pruning's
global pruning does. The threshold (as the fraction of all channels under it) is bisected
until the target is met."""

from __future__ import annotations

from pruning.cut import global_threshold_policy

from ..registry import register_strategy
from ..space import SearchSpace
from .common import OneShotStrategy


@register_strategy("global")
class GlobalThresholdStrategy(OneShotStrategy):
    """Bisect the global cut fraction r: channels of the searchable groups whose normalised
    score falls in the lowest r of all are cut (each group clipped to its bounds); evaluate
    the largest network that fits the budget."""

    name = "global"
    phase = "global"
    default_evaluator = "adaptive-bn"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        all_scores = space.channel_scores()
        self.scores = {k: all_scores[k] for k in space.keys}
        super().__init__(space, seed, upper=0.999)

    def _policy(self, rate: float) -> dict[str, float]:
        kept = global_threshold_policy(self.scores, min(rate, 0.999))
        return self.space.clip({k: self.space.rate_for_kept(k, n) for k, n in kept.items()})

    def _describe(self) -> str:
        return f"global threshold at {self.rate:.3f} of channels"
