"""The `reconstruct` evaluator: AMC's evaluation without fine-tuning. Cut the channels by the
job's criterion, recover every layer reading a cut group by least squares on calibration
feature maps (`search.amc.reconstruct`), then validate."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from pruning.bn import recalibrate_bn

from ..base import SearchError
from ..evaluators import EvalContext, Evaluator, register_evaluator
from .reconstruct import prune_and_reconstruct


@register_evaluator("reconstruct")
class ReconstructEvaluator(Evaluator):
    """Least-squares weight reconstruction (AMC), optionally followed by adaptive BN."""

    name = "reconstruct"

    def __init__(
        self, context: EvalContext, n_points: int = 10, ridge: float = 1e-4, adaptive_bn: bool = False
    ) -> None:
        super().__init__(context)
        if int(n_points) < 1:
            raise SearchError(f"reconstruct n_points must be at least 1, got {n_points}")
        self.n_points, self.ridge, self.adaptive_bn = int(n_points), float(ridge), bool(adaptive_bn)
        self.last_fits: list = []

    def cut(self, policy: Mapping[str, float]) -> nn.Module:
        """The cut copy with every layer that reads a cut group re-solved by least squares."""
        ctx = self.context
        if not ctx.calibration:
            raise SearchError("the reconstruct evaluator needs calibration batches from the training split")
        kept = ctx.space.kept(policy) if ctx.space is not None else dict(policy)
        model, self.last_fits = prune_and_reconstruct(
            ctx.model, kept, ctx.criterion, ctx.input_shape, ctx.calibration, self.n_points, self.ridge, seed=ctx.seed
        )
        return model

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        """Validation accuracy (after adaptive BN if asked)."""
        calibration = self.context.calibration  # present: `cut` checked it
        if self.adaptive_bn and calibration:
            recalibrate_bn(model, calibration)
        return self.validate(model)
