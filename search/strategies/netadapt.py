"""NetAdapt (Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
Applications", ECCV 2018): per iteration, lower the resource budget by a schedule; make one
proposal per layer, removing from that layer alone the fewest filters that meet the step;
score each after a short-term fine-tune; keep the best and repeat until the target is met.
The long fine-tune of the final network is the pipeline's. With a latency target the
resource is the per-layer lookup table (`search.latency`).

Simplification: every proposal is cut from the original trained network and fine-tuned
from there (the job's evaluator, `finetune` by default), instead of from the previous
iteration's fine-tuned weights; proposals stay independent and a search resumes exactly."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field

from ..base import Count, Proposal, Result, SearchError
from ..registry import register_strategy
from ..space import SearchSpace
from .common import SpaceStrategy


@register_strategy("netadapt")
class NetAdaptStrategy(SpaceStrategy):
    """Iteration i targets `resource(current) - step_i` (never below the budget), with
    `step_0 = (original - budget) / iterations` shrinking by `decay` each iteration.

    `iterations=None` (the default) sizes the schedule as the paper does, in small steps: each
    step is at most `step_share` (0.5) of what the median channel group can give when cut to
    its bound, so most layers can meet a step alone. A fixed small count (e.g. 5 at a 70% cut)
    makes each step larger than any one ordinary group's share, and only the residual stage
    groups can meet it: measured in the README, that collapses accuracy."""

    name = "netadapt"
    default_evaluator = "finetune"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        iterations: Count | None = None,
        decay: Annotated[float, Field(gt=0, le=1)] = 1.0,
        max_iterations: Count = 100,
        step_share: Annotated[float, Field(gt=0, le=1)] = 0.5,
    ) -> None:
        super().__init__(space, seed)
        self.decay, self.max_iterations = float(decay), int(max_iterations)
        self.current = {k: space.by_key[k].channels for k in space.keys}
        self.min_kept = {k: space.kept(space.smallest_policy())[k] for k in space.keys}
        self.initial = float(space.resource({})) - space.budget
        self.iterations = int(iterations) if iterations is not None else self._auto_iterations(float(step_share))
        self.step0 = self.initial / self.iterations
        self.iteration = 0
        self.round: list[Result] = []
        self.round_size = 0
        self.chosen: list[Result] = []

    def _policy(self, kept: dict[str, int]) -> dict[str, float]:
        return {k: self.space.rate_for_kept(k, n) for k, n in kept.items()}

    def _auto_iterations(self, step_share: float) -> int:
        """Steps small enough that the median group alone can give one (see the class doc)."""
        full = self._resource(self.current)
        gains = sorted(full - self._resource({**self.current, k: self.min_kept[k]}) for k in self.space.keys)
        gains = [g for g in gains if g > 0]
        if self.initial <= 0 or not gains:
            return 1
        step = step_share * gains[len(gains) // 2]
        return max(1, min(self.max_iterations, math.ceil(self.initial / step)))

    def _resource(self, kept: dict[str, int]) -> float:
        return self.space.resource(self._policy(kept))

    def _fewest_removed(self, key: str, goal: float) -> int | None:
        """The most channels `key` can keep (fewer than now) with the network within `goal`."""
        lo, hi = self.min_kept[key], self.current[key] - 1
        if hi < lo or self._resource({**self.current, key: lo}) > goal:
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._resource({**self.current, key: mid}) <= goal:
                lo = mid
            else:
                hi = mid - 1
        return lo

    @property
    def reached(self) -> bool:
        return self._resource(self.current) <= self.space.budget

    def ask(self, n: int = 1) -> list[Proposal]:
        out = self._reissued(n)
        if out or self.round_size or self.done:
            return out
        now = self._resource(self.current)
        goal = max(self.space.budget, now - self.step0 * self.decay**self.iteration)
        proposals = []
        for k in self.space.keys:
            c = self._fewest_removed(k, goal)
            if c is not None:
                proposals.append((k, c))
        if not proposals:  # no layer alone meets the step: take each layer's largest cut
            proposals = [(k, self.min_kept[k]) for k in self.space.keys if self.current[k] > self.min_kept[k]]
        if not proposals:
            raise SearchError("netadapt: every layer is at its bound and the target is still not met")
        self.round_size = len(proposals)
        return [
            self._propose(self._policy({**self.current, k: c}), "iterate", layer=k, kept=c, iteration=self.iteration)
            for k, c in proposals
        ]

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            self._absorb(r)

    def _absorb(self, r: Result) -> None:
        self.round.append(r)
        if len(self.round) == self.round_size:
            best = self._best_of(sorted(self.round, key=lambda x: x.proposal_id))
            assert best is not None  # the round holds at least the result just added
            self.chosen.append(best)
            self.current = {**self.current, best.meta["layer"]: int(best.meta["kept"])}
            self.iteration += 1
            self.round, self.round_size = [], 0

    @property
    def done(self) -> bool:
        return not self.round_size and (self.reached or self.iteration >= self.max_iterations)

    @property
    def best(self) -> Result | None:
        return self.chosen[-1] if self.chosen else None

    def progress(self) -> dict[str, Any]:
        left = self._resource(self.current) - self.space.budget
        frac = 1.0 if self.initial <= 0 else min(1.0, max(0.0, 1.0 - left / self.initial))
        return {"fraction": frac, "phase": f"NetAdapt: iteration {self.iteration}"}

    def _extra_state(self) -> dict[str, Any]:
        # the rounds' results, the chosen ones and the current widths come back from the record
        return {"iteration": self.iteration, "round_size": self.round_size}

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Replay the told results round by round (each round's proposals carry its iteration)."""
        iteration, round_size = int(state["iteration"]), int(state["round_size"])
        rounds: dict[int, list[Result]] = {}
        for r in self.history:
            rounds.setdefault(int(r.meta["iteration"]), []).append(r)
        for i in range(iteration):
            self.round_size = len(rounds.get(i, []))
            if not self.round_size:
                raise SearchError(f"netadapt: the record lacks the results of iteration {i}")
            for r in rounds[i]:
                self._absorb(r)
        self.round, self.round_size = list(rounds.get(iteration, [])), round_size
        complete = len(self.round) >= round_size if round_size else bool(self.round)
        if self.iteration != iteration or complete:
            raise SearchError("netadapt: the record does not match the checkpoint")
