"""The search space: the prunable channel groups of one model with per-group bounds, and the
resource accounting every strategy checks its policies against.

Bounds: every group keeps at least `min_channels`; no group is cut by more than `max_rate`;
the stem (the first conv's group) is kept whole unless `prune_stem`; `pinned` groups keep the
rate the user gave (or stay whole); groups the engine cannot cut correctly (`ChannelGroup.pinned`,
or a trial cut that breaks the network, `pruning.cut.trial_pins`) stay whole, listed with why in
`engine_pins`. Residual streams (`ChannelGroup.stream`: the channels a residual add joins, which
every block of a stage reads and writes) are cut like any group (`streams="search"`), kept whole
(`"whole"`), or cut last (`"last"`): kept whole when the budget can be met on the other groups
alone, otherwise cut by no more than the least that meets it, so the cut falls on the blocks'
inner widths first (the allocation ModelOpt's FastNAS finds on ResNets, see the README's hard
setting). Resources come from the
exact cost model (`pruning.cost`, traced once with the graph: microseconds a query, equal to
`pruning.measure` on the cut network; a model it cannot follow is counted on a real cut, cached by
kept-channel counts); latency comes from the per-layer
lookup table (NetAdapt-style, see `search.latency`), measured in the deployment `runtime`.

`round_to` rounds every kept width up to a multiple. Left unset (None) it is 1, except for a
latency target, where it is the step the runtime's kernels reward (`search.latency.measure_round_to`,
measured once and cached with the tables), capped at half the narrowest searchable group so that
every group can still be cut; `round_to_choice` records where the value came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from pruning.cost import CostModel, trace
from pruning.criteria import get_criterion
from pruning.cut import Policy, channels_to_cut, group_kept, group_scores, prepare_criterion, prune, trial_pins
from pruning.graph import ChannelGroup, DependencyGraph
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.runtime import Runtime

from .base import Result, SearchError
from .latency import LatencyTable, measure_round_to
from .target import Target

Streams = Literal["search", "last", "whole"]
"""How the search treats residual streams: like any group, cut last, or kept whole."""
STREAM_PIN = "a residual stream, kept whole (space.streams: {mode})"


Traced = tuple[DependencyGraph, CostModel]
"""What a `SearchSpace` starts from: the model's dependency graph (with the groups a trial cut
shows cannot be cut pinned) and its cost model, at one input shape."""


def trace_space(model: nn.Module, input_shape: Sequence[int]) -> Traced:
    """Trace `model` at `input_shape` as a `SearchSpace` does (the slow part of building one):
    computed once, it can be handed to spaces of the same model and input as `traced=`."""
    shape = tuple(int(s) for s in input_shape[-3:])
    graph, costs = trace(model, shape)
    trial_pins(model, shape, graph, costs=costs)
    return graph, costs


class SearchSpace:
    """Per-group rate bounds and resource accounting for `model` at `input_shape` (C, H, W).
    `traced` is `trace_space(model, input_shape)` when the caller has it already."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        target: Target | str | Mapping[str, Any],
        *,
        min_channels: int = 1,
        max_rate: float = 0.9,
        prune_stem: bool = False,
        pinned: Mapping[str, float] | Iterable[str] | None = None,
        round_to: int | None = 1,
        streams: Streams = "search",
        criterion: str = "l1",
        calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        latency_table: LatencyTable | None = None,
        runtime: Runtime = "eager",
        traced: Traced | None = None,
    ) -> None:
        if not 0.0 <= max_rate < 1.0:
            raise SearchError(f"max_rate must be in [0, 1), got {max_rate}")
        if min_channels < 1:
            raise SearchError(f"min_channels must be at least 1, got {min_channels}")
        if round_to is not None and round_to < 1:
            raise SearchError(f"round_to must be at least 1, got {round_to}")
        if streams not in get_args(Streams):
            raise SearchError(f"streams must be one of {', '.join(get_args(Streams))}, got {streams!r}")
        self.model = model
        self.input_shape = tuple(int(s) for s in input_shape[-3:])
        self.target = Target.from_value(target)
        self.min_channels, self.max_rate, self.prune_stem = min_channels, max_rate, prune_stem
        self.streams: Streams = streams
        self.criterion, self.calibration = criterion, calibration
        self.graph, self.costs = traced or trace_space(model, self.input_shape)
        self.groups: list[ChannelGroup] = self.graph.groups
        self.by_key = {g.key: g for g in self.groups}
        self.engine_pins: dict[str, str] = self.graph.pinned
        self.pinned = {**self._pins(pinned), **dict.fromkeys(self.engine_pins, 0.0)}
        self.keys = [g.key for g in self.groups if g.key not in self.pinned and (prune_stem or not g.is_stem)]
        if not self.keys:
            raise SearchError("nothing to search: every channel group is pinned or the stem")
        self.bounds = {k: (0.0, self._max_rate(self.by_key[k])) for k in self.keys}
        self._cache: dict[tuple[int, ...], dict[str, float]] = {}
        self._scores: dict[str, torch.Tensor] | None = None
        self._group_scores: tuple[tuple, dict[str, torch.Tensor]] = ((), {})
        self.latency_table, self.runtime = latency_table, runtime
        self.round_to, self.round_to_choice = self._round_to(round_to)
        if self.target.kind == "latency" and latency_table is None:
            self.latency_table = LatencyTable.for_model(model, self.input_shape, runtime=runtime)
        self.original = self.count({g.key: g.channels for g in self.groups})
        self.budget = self.target.budget(self.original[self.target.resource_key])
        self.stream_pins: list[str] = []
        self._bound_streams()
        smallest = self.resource(self.smallest_policy())
        if smallest > self.budget:
            n = len(self.stream_pins)
            whole = f" ({n} residual streams kept whole by space.streams)" if n else ""
            raise SearchError(
                f"target {self.target.describe()} is infeasible: the smallest network the bounds allow{whole} "
                f"still needs {smallest:,.6g} {self.target.kind} (budget {self.budget:,.6g}, original "
                f"{self.original[self.target.resource_key]:,.6g}); loosen the target or the bounds"
            )

    def _round_to(self, round_to: int | None) -> tuple[int, dict[str, Any]]:
        """The kept-width multiple and where it came from: the caller's, 1 (no latency target),
        or measured in the runtime and capped at half the narrowest searchable group."""
        if round_to is not None:
            return round_to, {"value": round_to, "source": "given"}
        if self.target.kind != "latency":
            return 1, {"value": 1, "source": "default (no latency target)"}
        measured = measure_round_to(self.model, self.input_shape, self.runtime)
        narrowest = min(self.by_key[k].channels for k in self.keys)
        cap = 1 << max(0, (narrowest // 2).bit_length() - 1)  # the largest power of two <= narrowest / 2
        value = max(1, min(int(measured["round_to"]), cap))
        return value, {
            "value": value,
            "source": f"measured in {self.runtime}",
            "measured": int(measured["round_to"]),
            "cap": cap,
            "narrowest_group": narrowest,
            "measurement": measured,
        }

    def _pins(self, pinned: Mapping[str, float] | Iterable[str] | None) -> dict[str, float]:
        if pinned is None:
            return {}
        pins = dict(pinned) if isinstance(pinned, Mapping) else dict.fromkeys(pinned, 0.0)
        unknown = [k for k in pins if k not in self.by_key]
        if unknown:
            raise SearchError(f"pinned groups {', '.join(unknown)} do not exist; groups are: {', '.join(self.by_key)}")
        for k, v in pins.items():
            if not 0.0 <= float(v) < 1.0:
                raise SearchError(f"pinned rate for {k} must be in [0, 1), got {v}")
        return {k: float(v) for k, v in pins.items()}

    def _bound_streams(self) -> None:
        """Apply `streams`: pin the searchable residual streams whole ("whole", or "last" when
        the other groups alone can meet the budget), or cap their rates at the least that meets it
        ("last"), found by bisection with every other group at its largest rate."""
        streams = [k for k in self.keys if self.by_key[k].stream]
        if self.streams == "search" or not streams:
            return
        if len(streams) == len(self.keys):
            if self.streams == "whole":
                raise SearchError(
                    "space.streams 'whole' leaves nothing to search: every searchable group is a residual stream"
                )
            return
        hi = {k: self.bounds[k][1] for k in streams}

        def capped(t: float) -> Policy:
            return {**self.smallest_policy(), **{k: t * hi[k] for k in streams}}

        if self.streams == "last" and not self.feasible(capped(0.0)):
            if self.feasible(capped(1.0)):  # otherwise infeasible anyway: the caller says so
                cap, _ = bisect_scalar(self, capped, 0.0, 1.0)
                self.bounds.update({k: (0.0, cap * hi[k]) for k in streams})
            return
        self.stream_pins = streams
        self.pinned.update(dict.fromkeys(streams, 0.0))
        self.keys = [k for k in self.keys if k not in hi]
        for k in streams:
            del self.bounds[k]

    def _max_rate(self, g: ChannelGroup) -> float:
        """The largest rate that keeps at least `min_channels` and cuts at most `max_rate`."""
        keep_min = min(g.channels, self.min_channels)
        by_channels = 1.0 - keep_min / g.channels
        return max(0.0, min(self.max_rate, by_channels))

    # ---- policies -------------------------------------------------------------------------
    def clip(self, policy: Mapping[str, float]) -> Policy:
        """The policy over every searchable group, clipped to its bounds (pinned groups and the
        stem are left to `full_policy`)."""
        out = {}
        for k in self.keys:
            lo, hi = self.bounds[k]
            out[k] = float(min(hi, max(lo, float(policy.get(k, 0.0)))))
        return out

    def full_policy(self, policy: Mapping[str, float]) -> Policy:
        """The clipped policy plus the pinned groups' rates: what is actually cut."""
        return {**self.pinned, **self.clip(policy)}

    def smallest_policy(self) -> Policy:
        """Every searchable group at its largest allowed rate."""
        return {k: self.bounds[k][1] for k in self.keys}

    def kept(self, policy: Mapping[str, float]) -> dict[str, int]:
        """Kept channels per group (all groups) for a policy."""
        full = self.full_policy(policy)
        return {g.key: group_kept(g, full.get(g.key, 0.0), self.round_to) for g in self.groups}

    def rate_for_kept(self, key: str, kept: int) -> float:
        """The rate that keeps exactly `kept` channels of group `key`."""
        c = self.by_key[key].channels
        return max(0.0, min(1.0 - 1e-9, 1.0 - kept / c))

    # ---- resources ------------------------------------------------------------------------
    def cut(
        self,
        policy: Mapping[str, float],
        criterion: str | None = None,
        calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        model: nn.Module | None = None,
    ) -> nn.Module:
        """The physically cut copy of the model (or of `model`, same architecture) for a policy."""
        return self.cut_indices(policy, criterion, calibration, model)[0]

    def cut_indices(
        self,
        policy: Mapping[str, float],
        criterion: str | None = None,
        calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        model: nn.Module | None = None,
    ) -> tuple[nn.Module, dict[str, list[int]]]:
        """The cut copy for a policy and, per group, the original channels it kept: the channels
        `pruning.cut.prune` chooses (the criterion's scores, computed once per model state),
        removed by index selection on the trace the space already holds (no re-trace)."""
        crit = criterion or self.criterion
        calib = calibration if calibration is not None else self.calibration
        net = model if model is not None else self.model
        kept = self.kept(policy)
        scores = self.group_scores(net, crit, calib if get_criterion(crit).needs_data else None)
        removed = {
            g.key: channels_to_cut(g, scores[g.key], g.channels - kept[g.key])
            for g in self.groups
            if g.pinned is None and kept[g.key] < g.channels
        }
        indices = {g.key: sorted(set(range(g.channels)) - set(removed.get(g.key, []))) for g in self.groups}
        return self.costs.cut(net, removed), indices

    def group_scores(
        self,
        model: nn.Module,
        criterion: str,
        calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The criterion's raw per-channel scores of every cuttable group of `model` (the space's
        architecture), as `pruning.cut.prune` computes them; kept until the weights change."""
        versions = tuple((p.data_ptr(), p._version) for p in model.parameters())
        state = (id(model), criterion, id(calibration), versions)
        if self._group_scores[0] != state:
            crit = get_criterion(criterion)
            prepare_criterion(crit, model, self.graph, calibration)
            self._group_scores = (state, group_scores(model, self.graph, crit))
        return self._group_scores[1]

    def resources(self, policy: Mapping[str, float], cut: nn.Module | None = None) -> dict[str, float]:
        """`flops`, `params`, `memory_bytes` and `latency_ms` (lookup table; None without one)
        of the network a policy gives, counted on the cut model (`cut`, if already made)."""
        return self.count(self.kept(policy), cut)

    def count(self, kept: Mapping[str, int], cut: nn.Module | None = None) -> dict[str, float]:
        """Resources of the network with `kept` channels per group: from the cost model, or, for
        a model it cannot follow (`self.costs.reason`), counted on `cut` or a cut made here (cached)."""
        if self.costs.exact:
            res: dict[str, Any] = {**self.costs.count(kept), "latency_ms": None}
            if self.latency_table is not None:
                res["latency_ms"] = self.latency_table.predict(self.graph, kept)
            return res
        key = tuple(int(kept[g.key]) for g in self.groups)
        if key not in self._cache:
            if cut is None and all(kept[g.key] == g.channels for g in self.groups):
                cut = self.model
            elif cut is None:
                cut = prune(self.model, dict(kept), "l1", input_shape=self.input_shape)
            res = {
                "flops": count_flops(cut, self.input_shape),
                "params": count_params(cut),
                "memory_bytes": peak_memory_bytes(cut, self.input_shape),
                "latency_ms": None,
            }
            if self.latency_table is not None:
                res["latency_ms"] = self.latency_table.predict(self.graph, kept)
            self._cache[key] = res
        return dict(self._cache[key])

    def resource(self, policy: Mapping[str, float]) -> float:
        """The targeted resource of a policy."""
        return float(self.resources(policy)[self.target.resource_key])

    def feasible(self, policy: Mapping[str, float]) -> bool:
        """Whether a policy's network fits the budget."""
        return self.resource(policy) <= self.budget

    def meets(self, result: Result) -> bool:
        """Whether an evaluated result fits the budget, read from its own counts (no cut)."""
        value = getattr(result, self.target.resource_key, None)
        return value is not None and float(value) <= self.budget * (1 + 1e-9)

    def fraction(self, policy: Mapping[str, float]) -> float:
        """The targeted resource as a fraction of the original network's."""
        return self.resource(policy) / max(1e-12, float(self.original[self.target.resource_key]))

    # ---- helpers for strategies -----------------------------------------------------------
    def channel_scores(self) -> dict[str, torch.Tensor]:
        """Per-group channel importances by the space's criterion, normalised by the criterion
        so one threshold compares groups (for the global strategy)."""
        if self._scores is None:
            crit = get_criterion(self.criterion)
            was_training = self.model.training
            self.model.eval()
            crit.prepare(self.model, self.graph, self.calibration if crit.needs_data else None)
            self.model.train(was_training)
            self._scores = {
                g.key: crit.normalise(crit.scores(self.model, self.graph, g).detach().cpu().float())
                for g in self.groups
                if g.pinned is None
            }
        return self._scores

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: groups with channels and bounds, target, budget, original resources."""
        return {
            "target": self.target.as_dict(),
            "budget": self.budget,
            "streams": self.streams,
            "round_to": self.round_to_choice,
            "original": self.original,
            "latency_table": self.latency_table.device if self.latency_table is not None else None,
            "groups": [
                {
                    "key": g.key,
                    "channels": g.channels,
                    "stem": g.is_stem,
                    "depthwise": g.depthwise,
                    "stream": g.stream,
                    "searchable": g.key in self.bounds,
                    "max_rate": self.bounds.get(g.key, (0, 0))[1],
                    "pinned": self.pinned.get(g.key),
                    "pinned_reason": self.engine_pins.get(g.key)
                    or (STREAM_PIN.format(mode=self.streams) if g.key in self.stream_pins else None),
                }
                for g in self.groups
            ],
        }


def bisect_scalar(
    space: SearchSpace, make_policy, lo: float, hi: float, iters: int = 40, tol: float = 0.0
) -> tuple[float, Policy]:
    """The smallest `t` in [lo, hi] whose `make_policy(t)` is feasible, for families where the
    resource falls as `t` grows; returns (t, policy). `make_policy(hi)` must be feasible.
    Stops early once a feasible policy uses at least `1 - tol` of the budget."""
    best_t, best = hi, make_policy(hi)
    if not space.feasible(best):
        raise SearchError(f"no feasible policy in this family for target {space.target.describe()}")
    if space.feasible(make_policy(lo)):
        return lo, make_policy(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        pol = make_policy(mid)
        if space.feasible(pol):
            hi, best_t, best = mid, mid, pol
            if tol > 0 and space.resource(pol) >= (1.0 - tol) * space.budget:
                break
        else:
            lo = mid
        if hi - lo < 1e-4:  # finer than one channel of a 1,000-channel group
            break
    return best_t, best
