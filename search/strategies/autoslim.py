"""AutoSlim (Yu & Huang, "AutoSlim: Towards One-Shot Architecture Search for Channel Numbers",
2019): greedy channel slimming of a trained (universally) slimmable network.

Starting from the supernet's largest width, each step tries, for every searchable channel
group, removing one step of its channels (a fraction of the group, e.g. 10%, or a fixed
count); every trial is scored with the shared weights on held-out batches after BN
calibration (`shared-weights` evaluator), and the change that loses the least accuracy is
kept. Steps repeat until the target (FLOPs, params, memory or latency) is met. Every trial
is a candidate, so the whole trajectory is recorded.

Addition to the paper, which stops at the first configuration under the budget: the last
step of the chosen group is trimmed to the fewest channels that still meet the budget, then
single channels are added back greedily (each round scores every group that can take one
more channel within the budget and keeps the best), so the result lands just under the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from pruning.data import calibration_batches
from pruning.device import get_device
from pruning.errors import PruningError
from pruning.slimmable import FirstK, SlimmableNet, calibrate_bn, load_supernet, supernet_meta, width_channels

from ..base import Count, Proposal, Result, SearchError
from ..evaluators import EvalContext, Evaluator, register_evaluator
from ..registry import register_strategy
from ..space import SearchSpace
from .common import SpaceStrategy

EVALUATOR = "shared-weights"


def _resolve(supernet: str | Path | None) -> Path:
    if not supernet:
        raise SearchError(
            "autoslim needs a trained slimmable network: --option supernet=DIR "
            "(from `secateurs slimmable train --universal`)"
        )
    try:
        supernet_meta(supernet)
    except PruningError as exc:
        raise SearchError(str(exc)) from exc
    return Path(supernet)


@register_strategy("autoslim")
class AutoSlimStrategy(SpaceStrategy):
    """Greedy slimming with shared weights (see module doc). `supernet` is the folder (or JSON)
    `secateurs slimmable train --universal` wrote; `step` is the fraction of each group's
    channels removed per trial (float < 1) or a channel count (int >= 1)."""

    name = "autoslim"
    default_evaluator = EVALUATOR

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        supernet: str | Path | None = None,
        step: Annotated[float, Field(gt=0, le=100_000)] = 0.1,
        calibration_batches: Count | None = None,
    ) -> None:
        super().__init__(space, seed)
        path = _resolve(supernet)
        meta, _ = supernet_meta(path)
        if not meta.get("universal"):
            raise SearchError(
                "autoslim needs a universally slimmable supernet (train it with --universal): "
                "a switchable-BN network only runs at its listed uniform widths"
            )
        groups = {k: int(v) for k, v in meta["groups"].items()}
        if groups != {g.key: g.channels for g in space.groups}:
            raise SearchError(f"the supernet at {path} was trained for another model: its channel groups differ")
        step = float(step)
        if step <= 0 or (step >= 1 and step != int(step)):
            raise SearchError(f"autoslim step must be a fraction in (0, 1) or a whole channel count, got {step}")
        self.supernet = str(path)
        self.options: dict[str, Any] = {"supernet": self.supernet}
        if calibration_batches is not None:
            self.options["calibration_batches"] = int(calibration_batches)
        lowest = space.kept(space.smallest_policy())
        min_w, max_w = float(min(meta["widths"])), float(max(meta["widths"]))
        self.floor = {k: max(lowest[k], width_channels(groups[k], min_w)) for k in space.keys}
        self.step_size = {k: max(1, round(step * groups[k]) if step < 1 else int(step)) for k in space.keys}
        self.kept = {k: width_channels(groups[k], max_w) for k in space.keys}
        self.ceiling = dict(self.kept)
        self.iteration = 0
        self.queue: list[Proposal] = []
        self.step_results: list[Result] = []
        self.trajectory: list[Result] = []
        self.started = False
        self.finished = False
        self._final: Result | None = None

    @classmethod
    def base_model(cls, options: Mapping[str, Any], zoo: str, args: Mapping[str, Any]) -> tuple[str, str] | None:
        """The pipeline's trained model and criterion: the supernet's plain full-width weights,
        cut by `first-k` so the final network is exactly the searched sub-network."""
        meta, folder = supernet_meta(_resolve(options.get("supernet")))
        if meta["zoo"] != zoo:
            raise SearchError(f"the supernet is a {meta['zoo']}, not a {zoo}: pass --model {meta['zoo']}")
        differ = {k: (v, args.get(k)) for k, v in meta.get("args", {}).items() if args.get(k) != v}
        if differ:
            raise SearchError(
                "the supernet was trained for other model arguments (saved vs. now): "
                + ", ".join(f"{k}={a} vs {b}" for k, (a, b) in differ.items())
            )
        if not meta.get("full_weights"):
            raise SearchError("autoslim needs a supernet whose largest width is 1.0")
        return str(folder / meta["full_weights"]), FirstK.name

    # -- helpers -------------------------------------------------------------------------------

    def _policy(self, kept: Mapping[str, int]) -> dict[str, float]:
        return {k: self.space.rate_for_kept(k, int(n)) for k, n in kept.items()}

    def _proposal(self, kept: Mapping[str, int], phase: str, **meta: Any) -> Proposal:
        return self._propose(
            self._policy(kept),
            phase,
            EVALUATOR,
            evaluator_options=dict(self.options),
            kept={k: int(v) for k, v in kept.items()},
            iteration=self.iteration,
            **meta,
        )

    def _trials(self) -> list[Proposal]:
        out = []
        for k in self.space.keys:
            n = max(self.floor[k], self.kept[k] - self.step_size[k])
            if n < self.kept[k]:
                out.append(self._proposal({**self.kept, k: n}, "greedy", group=k, removed=self.kept[k] - n))
        return out

    def _trimmed(self, chosen: Result) -> dict[str, int]:
        """The chosen step with as few of its group's channels removed as still meet the budget."""
        kept = {k: int(v) for k, v in chosen.meta["kept"].items()}
        group = chosen.meta.get("group")
        if group is None:
            return kept
        full = self.kept[group]
        for n in range(full - 1, kept[group], -1):
            trial = {**kept, group: n}
            if self.space.feasible(self._policy(trial)):
                return trial
        return kept

    def _fills(self) -> list[Proposal]:
        """One more channel for each group that can take it within the budget."""
        out = []
        for k in self.space.keys:
            trial = {**self.kept, k: self.kept[k] + 1}
            if self.kept[k] < self.ceiling[k] and self.space.feasible(self._policy(trial)):
                out.append(self._proposal(trial, "fill", group=k))
        return out

    def _fill_from(self, result: Result) -> None:
        """`result` meets the budget: it is the answer unless channels can be added back."""
        self.kept = {k: int(v) for k, v in result.meta["kept"].items()}
        self._final = result
        self.queue = self._fills()
        if not self.queue:
            self._finish(result)

    def _advance(self) -> None:
        """All trials of a step are told: keep the best and queue the next step (or finish)."""
        key = self.space.target.resource_key
        filling = self.step_results[0].phase == "fill"
        sign = 1.0 if filling else -1.0  # ties: the smaller network when removing, the larger when adding
        trials = sorted(self.step_results, key=lambda r: r.proposal_id)  # ties: the first proposed
        chosen = max(trials, key=lambda r: (r.score, sign * float(getattr(r, key) or 0.0)))
        self.step_results = []
        self.iteration += 1
        if filling:
            self.trajectory.append(chosen)
            self._fill_from(chosen)
            return
        if self.space.feasible(chosen.policy):
            trimmed = self._trimmed(chosen)
            if trimmed != chosen.meta["kept"]:
                self.queue = [self._proposal(trimmed, "final", group=chosen.meta.get("group"))]
                return
            self.trajectory.append(chosen)
            self._fill_from(chosen)
            return
        self.kept = {k: int(v) for k, v in chosen.meta["kept"].items()}
        self.trajectory.append(chosen)
        self.queue = self._trials()
        if not self.queue:
            raise SearchError(
                f"autoslim cannot meet {self.space.target.describe()}: every group is at the "
                "smallest width the supernet was trained for"
            )

    def _finish(self, result: Result) -> None:
        self.kept = {k: int(v) for k, v in result.meta["kept"].items()}
        self._final = result
        self.finished = True

    # -- ask/tell --------------------------------------------------------------------------------

    def ask(self, n: int = 1) -> list[Proposal]:
        again = self._reissued(n)
        if again or self.finished:
            return again
        if not self.started:
            self.started = True
            self.queue = [self._proposal(self.kept, "start")]
        out, self.queue = self.queue[:n], self.queue[n:]
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            if r.phase == "final":
                self.trajectory.append(r)
                self._fill_from(r)
            elif r.phase == "start":
                self.trajectory.append(r)
                if self.space.feasible(r.policy):
                    self._finish(r)
                else:
                    self.queue = self._trials()
            else:
                self.step_results.append(r)
        if self.step_results and not self.queue and not self.outstanding and not self._reissue:
            self._advance()

    @property
    def done(self) -> bool:
        return self.finished and not self.outstanding

    @property
    def best(self) -> Result | None:
        if self._final is not None:
            return self._final
        return self.trajectory[-1] if self.trajectory else None

    def config(self) -> dict[str, int]:
        """Kept channels per group (all groups) of the current (final, when done) configuration."""
        return self.space.kept(self._policy(self.kept))

    def progress(self) -> dict[str, Any]:
        space = self.space
        orig = float(space.original[space.target.resource_key])
        now = space.resource(self._policy(self.kept))
        span = max(1e-12, orig - space.budget)
        frac = 1.0 if self.finished else max(0.0, min(0.99, (orig - now) / span))
        return {"fraction": frac, "phase": f"AutoSlim: step {self.iteration}, {now / orig:.1%} of {space.target.kind}"}

    def _extra_state(self) -> dict[str, Any]:
        # the greedy steps are deterministic given their scores: everything else is replayed from the record
        return {"queued": [p.id for p in self.queue]}

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Replay the search from its start with the told results (ask everything, tell what the
        record has, stop at the first step with results missing), then check it ends where the
        checkpoint did: the same next id and outstanding proposals, some of them still queued."""
        told = {r.proposal_id: r for r in self.history}
        next_id, outstanding = self.next_id, self.outstanding
        self.next_id, self.outstanding, self._reissue, self.history = 0, {}, [], []
        while not self.finished:
            asked = self.ask(1 << 30)
            results = [told[p.id] for p in asked if p.id in told]
            self.tell(results)
            if not asked or len(results) < len(asked):
                break
        replayed = {p.id: p.policy for p in self.outstanding.values()}
        if (
            self.next_id != next_id
            or replayed != {i: p.policy for i, p in outstanding.items()}
            or len(self.history) != len(told)
        ):
            raise SearchError("autoslim: replaying the record does not reach the checkpoint's state")
        queued = {int(i) for i in state["queued"]}
        self.outstanding = outstanding
        self.queue = [outstanding[i] for i in sorted(queued)]
        self._reissue = [p for i, p in sorted(outstanding.items()) if i not in queued]


@register_evaluator(EVALUATOR)
class SharedWeightsEvaluator(Evaluator):
    """AutoSlim's evaluator: run the supernet at the policy's channel configuration (no copy,
    no cut), calibrate its BN statistics on training batches (US-Nets), score on validation.
    Resources are those of the really cut network (from the search space)."""

    name = EVALUATOR
    gives_cut_model = False  # it scores generated/shared weights, not the cut network's own

    def __init__(
        self, context: EvalContext, supernet: str | Path | None = None, calibration_batches: Count | None = None
    ) -> None:
        super().__init__(context)
        if supernet is None and isinstance(context.model, SlimmableNet):
            self._net: SlimmableNet | None = context.model
            self.path = None
        else:
            self.path = str(supernet or context.extras.get("supernet") or "")
            self._net = None
        self.n_calibration = calibration_batches

    @property
    def net(self) -> SlimmableNet:
        """The supernet, loaded on first use onto the context's device."""
        if self._net is None:
            try:
                net = load_supernet(_resolve(self.path))
            except PruningError as exc:
                raise SearchError(str(exc)) from exc
            dev = self.context.device
            self._net = net.to(get_device(dev) if isinstance(dev, str) else dev)
        return self._net

    def _calibration(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ctx = self.context
        if ctx.calibration and self.n_calibration is None:
            return list(ctx.calibration)
        return calibration_batches(ctx.data.train, self.n_calibration or 4, 64, ctx.seed)

    def config(self, policy: Mapping[str, float]) -> dict[str, int]:
        """Kept channels per group of a policy (space bounds applied when a space is known)."""
        if self.context.space is not None:
            return self.context.space.kept(policy)
        return self.net.policy_to_config(policy)

    def cut(self, policy: Mapping[str, float]) -> nn.Module:
        net = self.net
        net.set_config(self.config(policy))
        return net

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        if isinstance(model, SlimmableNet) and model.universal:
            calibrate_bn(model, self._calibration())
        return self.validate(model)

    def resources(self, model: nn.Module, policy: Mapping[str, float]) -> dict[str, Any]:
        if self.context.space is not None:
            return self.context.space.resources(policy)
        return super().resources(self.net.export(self.config(policy)), policy)
