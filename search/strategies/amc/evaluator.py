"""The `reconstruct` evaluator: AMC's evaluation without fine-tuning. Cut the channels by the
job's criterion (from the search space's cached trace), recover every layer reading a cut group
by least squares on calibration feature maps (`search.strategies.amc.reconstruct`), then validate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field
from torch import nn

from pruning.criteria import get_criterion

from ...base import Count, SearchError
from ...evaluators import EvalContext, Evaluator, register_evaluator
from .reconstruct import prune_and_reconstruct, reconstruct_groups


@register_evaluator("reconstruct")
class ReconstructEvaluator(Evaluator):
    """Least-squares weight reconstruction (AMC), optionally followed by adaptive BN."""

    name = "reconstruct"

    def __init__(
        self,
        context: EvalContext,
        n_points: Count = 10,
        ridge: Annotated[float, Field(ge=0, le=1e3)] = 1e-4,
        adaptive_bn: bool = False,
    ) -> None:
        super().__init__(context)
        self.n_points, self.ridge, self.adaptive_bn = int(n_points), float(ridge), bool(adaptive_bn)
        self.last_fits: list = []

    def cut(self, policy: Mapping[str, float]) -> nn.Module:
        """The cut copy with every layer that reads a cut group re-solved by least squares (cut
        from the space's cached trace when there is a space; the least squares timed apart)."""
        ctx = self.context
        if not ctx.calibration:
            raise SearchError("the reconstruct evaluator needs calibration batches from the training split")
        if ctx.space is None:
            with self.timed("reconstruct"):
                model, self.last_fits = prune_and_reconstruct(
                    ctx.model,
                    dict(policy),
                    ctx.criterion,
                    ctx.input_shape,
                    ctx.calibration,
                    self.n_points,
                    self.ridge,
                    seed=ctx.seed,
                )
            return model
        calib = ctx.calibration if get_criterion(ctx.criterion).needs_data else None
        model, kept = ctx.space.cut_indices(policy, ctx.criterion, calib, model=ctx.model)
        with self.timed("reconstruct"):
            self.last_fits = reconstruct_groups(
                ctx.model, model, kept, ctx.space.groups, ctx.calibration, self.n_points, self.ridge, seed=ctx.seed
            )
        return model

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        """Validation accuracy (after adaptive BN if asked)."""
        if self.adaptive_bn and self.context.calibration:
            self.recalibrate(model)
        return self.validate(model)
