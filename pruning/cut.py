"""Structured cutting: `prune(model, policy, criterion)` returns a physically smaller model.

A policy maps each prunable channel group (by key, see `graph.DependencyGraph`) to a pruning
rate in [0, 1) or, as an int, to the number of channels to keep. No group is cut to zero
channels, and kept counts can be rounded up to a multiple (e.g. 8) for hardware.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .criteria import Criterion, get_criterion
from .errors import CutError, PinnedGroupWarning, PruningError
from .graph import ChannelGroup, DependencyGraph
from .tasks import named_outputs

if TYPE_CHECKING:
    from .cost import CostModel

Policy = dict[str, float]
"""A pruning policy, the one type for it everywhere (engine and search): per channel group key, the
share of its channels to cut, in [0, 1), or, as an int, the number to keep. Functions that only read
a policy take any `Mapping[str, float]`."""


def kept_channels(channels: int, amount: float | int, round_to: int = 1, step: int = 1) -> int:
    """Channels a group keeps for a rate (float) or a kept count (int), at least one,
    rounded up to a multiple of `round_to` but never above the original; with `step` > 1 (a
    group cut in whole conv groups or split parts, `ChannelGroup.step`) the cut is rounded
    down to a multiple of `step`, so at least `step` channels stay."""
    if isinstance(amount, bool):
        raise PruningError("a policy value must be a rate or a channel count")
    if isinstance(amount, int):
        keep = amount
    else:
        if not 0.0 <= amount < 1.0:
            raise PruningError(f"pruning rate {amount} is outside [0, 1)")
        keep = round(channels * (1.0 - amount))
    keep = max(1, min(channels, keep))
    if round_to > 1:
        keep = min(channels, int(math.ceil(keep / round_to) * round_to))
    if step > 1:
        cut = channels - keep
        keep = channels - (cut - cut % step)
    return keep


def group_kept(group: ChannelGroup, amount: float | int, round_to: int = 1) -> int:
    """Channels `group` keeps for a policy value: all of them when it is pinned, otherwise
    `kept_channels` in the group's own steps."""
    if group.pinned is not None:
        return group.channels
    return kept_channels(group.channels, amount, round_to, group.step)


def uniform_policy(graph: DependencyGraph, rate: float, skip_stem: bool = False) -> Policy:
    """The same rate for every group (optionally leaving the stem whole)."""
    return {g.key: (0.0 if (skip_stem and g.is_stem) else rate) for g in graph.groups}


def resolve_policy(graph: DependencyGraph, policy: Mapping[str, float] | float, round_to: int = 1) -> dict[str, int]:
    """Kept channels per group for a policy (or one rate for all); unknown keys are an error,
    missing ones keep all."""
    if isinstance(policy, bool):
        raise PruningError("a policy is a rate or a mapping of channel group keys to rates")
    if not isinstance(policy, Mapping):
        policy = uniform_policy(graph, float(policy))
    unknown = set(policy) - set(graph.by_key)
    if unknown:
        raise PruningError(
            f"policy names unknown channel groups: {', '.join(sorted(unknown))}; groups are: {', '.join(graph.by_key)}"
        )
    return {g.key: group_kept(g, policy.get(g.key, 0.0), round_to) for g in graph.groups}


def example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero batch of one on the model's device, for tracing."""
    device = next(model.parameters()).device
    return torch.zeros(1, *input_shape[-3:], device=device)


def group_scores(model: nn.Module, graph: DependencyGraph, criterion: Criterion) -> dict[str, torch.Tensor]:
    """The criterion's per-channel scores of every group that can be cut, on the CPU."""
    return {g.key: criterion.scores(model, graph, g).detach().cpu() for g in graph.groups if g.pinned is None}


def global_policy(
    model: nn.Module,
    input_shape: Sequence[int],
    rate: float,
    criterion: str | Criterion = "l1",
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, int]:
    """Kept counts from one global threshold: the `rate` fraction of all channels with the
    lowest normalised scores is cut, wherever they are (each group keeps at least one).
    Scores are made comparable by the criterion's `normalise` (mean 1 per group; raw |gamma|
    for Network Slimming, as in its paper)."""
    graph = DependencyGraph(model, example_input(model, input_shape))
    crit = get_criterion(criterion)
    prepare_criterion(crit, model, graph, calibration)
    scores = {k: crit.normalise(s) for k, s in group_scores(model, graph, crit).items()}
    return global_threshold_policy(scores, rate)


def global_threshold_policy(scores: Mapping[str, torch.Tensor], rate: float) -> dict[str, int]:
    """Kept counts per group for the lowest `rate` fraction of all (normalised) scores.
    Exactly that many channels are cut: ties at the threshold are broken in model order
    (each group still keeps at least one channel)."""
    if not 0.0 <= rate < 1.0:
        raise PruningError(f"pruning rate {rate} is outside [0, 1)")
    keys = list(scores)
    flat = torch.cat([scores[k].flatten().float() for k in keys])
    owner = torch.cat([torch.full((scores[k].numel(),), i) for i, k in enumerate(keys)])
    n_cut = round(len(flat) * rate)
    cut = torch.bincount(owner[torch.argsort(flat, stable=True)[:n_cut]], minlength=len(keys))
    return {k: max(1, scores[k].numel() - int(cut[i])) for i, k in enumerate(keys)}


def prepare_criterion(
    crit: Criterion,
    model: nn.Module,
    graph: DependencyGraph,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
) -> None:
    """Let a criterion collect its statistics (in eval mode); data-dependent ones need batches."""
    if crit.needs_data and not calibration:
        raise PruningError(f"criterion {crit.name!r} needs calibration batches from the training data")
    was_training = model.training
    model.eval()
    crit.prepare(model, graph, calibration)
    model.train(was_training)


def channels_to_cut(group: ChannelGroup, scores: torch.Tensor, n_cut: int) -> list[int]:
    """The `n_cut` lowest-scoring channels of a group as its structure allows: whole blocks of
    `unit` channels (by their mean score) for a grouped conv, the same number from each part of
    a split, otherwise simply the lowest."""
    if n_cut <= 0:
        return []
    if group.unit > 1:
        blocks = scores.float().reshape(-1, group.unit).mean(1)
        gone = torch.argsort(blocks, stable=True)[: n_cut // group.unit].tolist()
        return sorted(b * group.unit + i for b in gone for i in range(group.unit))
    if group.parts:
        per_part = n_cut // len(group.parts)
        out: list[int] = []
        for part in group.parts:
            idx = torch.tensor(part)
            out += idx[torch.argsort(scores[idx], stable=True)[:per_part]].tolist()
        return sorted(out)
    return sorted(torch.argsort(scores, stable=True)[:n_cut].tolist())


def cut_groups(
    graph: DependencyGraph, keep: Mapping[str, int], scores: Mapping[str, torch.Tensor], only: set[str] | None = None
) -> dict[str, list[int]]:
    """Cut every group that can be cut (or those in `only`) to its `keep` count, in model
    order, choosing channels by `scores`; returns each group's kept original channel indices."""
    kept: dict[str, list[int]] = {}
    for g in graph.groups:
        if g.pinned is not None or (only is not None and g.key not in only):
            kept[g.key] = list(range(g.channels))
            continue
        gone = channels_to_cut(g, scores[g.key], g.channels - keep[g.key])
        kept[g.key] = sorted(set(range(g.channels)) - set(gone))
        graph.prune_group(g.key, gone)
    return kept


def output_shape(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of each of the model's outputs on `x` by name (`pruning.tasks.named_outputs`;
    a network with one output: `{"output": shape}`), in eval mode (BN statistics untouched)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    return {k: tuple(v.shape) for k, v in named_outputs(out).items()}


def _shapes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    one = next(iter(shapes.values())) if len(shapes) == 1 else None
    return str(one) if one is not None else ", ".join(f"{k} {v}" for k, v in shapes.items())


def check_cut(model: nn.Module, x: torch.Tensor, expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise `CutError` unless the cut model runs on `x` and gives the `expected` output shapes
    (every output, by name)."""
    try:
        shape = output_shape(model, x)
    except Exception as exc:  # any failure of the forward is the check failing
        raise CutError(f"the network fails its first forward after cutting {what}: {exc}") from exc
    if shape != dict(expected):
        raise CutError(f"cutting {what} changed the output shape from {_shapes(expected)} to {_shapes(shape)}")


def _what(group: ChannelGroup) -> str:
    return f"channel group {group.key} ({', '.join(group.members)})"


@dataclass
class CutOutcome:
    """A cut network, the original channel indices each group kept, and the groups kept whole
    because cutting them broke the network (key -> why)."""

    model: nn.Module
    kept: dict[str, list[int]]
    pinned: dict[str, str] = field(default_factory=dict)


def cut_model(
    model: nn.Module,
    policy: Mapping[str, float] | float,
    criterion: str | Criterion = "l1",
    input_shape: Sequence[int] | None = None,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    round_to: int = 1,
    inplace: bool = False,
    pin_failures: bool = True,
) -> CutOutcome:
    """`prune`, with what it kept and pinned. The cut is checked with a forward on the example
    input (output shape unchanged); when that fails, groups are cut again one at a time on a
    fresh copy, each checked, and a group whose cut breaks the network is kept whole
    (`pin_failures`) or named in a `CutError`. `inplace` cuts `model` itself and raises
    `CutError` on a failed check (there is no original left to cut again)."""
    if input_shape is None:
        if not calibration:
            raise PruningError("prune needs input_shape or calibration batches to trace the model")
        input_shape = tuple(calibration[0][0].shape[1:])
    target = model if inplace else copy.deepcopy(model)
    x = example_input(target, input_shape)
    graph = DependencyGraph(target, x)
    expected = output_shape(target, x)
    keep = resolve_policy(graph, policy, round_to)
    crit = get_criterion(criterion)
    prepare_criterion(crit, target, graph, calibration)
    scores = group_scores(target, graph, crit)
    _warn_pinned(graph, policy)
    try:
        kept = cut_groups(graph, keep, scores)
        check_cut(target, x, expected, "the policy's groups")
        return CutOutcome(target, kept)
    except Exception as exc:  # a failed cut or check: find the group below
        if inplace:
            raise CutError(f"the cut network fails its check: {exc}") from exc
    return _cut_one_by_one(model, input_shape, keep, scores, expected, pin_failures)


def _cut_one_by_one(
    model: nn.Module,
    input_shape: Sequence[int],
    keep: Mapping[str, int],
    scores: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    pin_failures: bool,
) -> CutOutcome:
    """Cut groups one at a time on a fresh copy, checking after each; a group whose cut fails
    is pinned (or raised) and the copy rebuilt from the groups cut so far."""
    done: set[str] = set()
    pinned: dict[str, str] = {}

    def fresh() -> tuple[nn.Module, DependencyGraph, torch.Tensor]:
        target = copy.deepcopy(model)
        x = example_input(target, input_shape)
        graph = DependencyGraph(target, x)
        for key, why in pinned.items():
            graph.pin(key, why)
        cut_groups(graph, keep, scores, only=done)
        return target, graph, x

    target, graph, x = fresh()
    for g in list(graph.groups):
        if g.pinned is not None or keep[g.key] >= g.channels:
            continue
        try:
            cut_groups(graph, keep, scores, only={g.key})
            check_cut(target, x, expected, _what(g))
            done.add(g.key)
        except Exception as exc:  # this group's cut broke the network
            err = exc if isinstance(exc, CutError) else CutError(f"cutting {_what(g)} fails: {exc}")
            if not pin_failures:
                raise CutError(str(err), g.key, g.members) from exc
            pinned[g.key] = f"cutting it breaks the network ({err})"
            warnings.warn(f"{_what(g)} is kept whole: {pinned[g.key]}", PinnedGroupWarning, stacklevel=3)
            target, graph, x = fresh()
    check_cut(target, x, expected, "the remaining groups")
    kept = {g.key: list(range(g.channels)) for g in graph.groups}
    for key in done:
        group = graph.by_key[key]
        kept[key] = sorted(
            set(range(group.channels)) - set(channels_to_cut(group, scores[key], group.channels - keep[key]))
        )
    return CutOutcome(target, kept, pinned)


def _warn_pinned(graph: DependencyGraph, policy: Mapping[str, float] | float) -> None:
    """A `PinnedGroupWarning` for each pinned group the policy asks to cut."""
    for g in graph.groups:
        amount = policy.get(g.key, 0.0) if isinstance(policy, Mapping) else policy
        if g.pinned is not None and amount and kept_channels(g.channels, amount) < g.channels:
            warnings.warn(g.describe_pin(), PinnedGroupWarning, stacklevel=4)


def prune(
    model: nn.Module,
    policy: Mapping[str, float] | float,
    criterion: str | Criterion = "l1",
    input_shape: Sequence[int] | None = None,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    round_to: int = 1,
    inplace: bool = False,
) -> nn.Module:
    """Cut the channels a policy asks for, choosing them by `criterion`, and return the smaller
    model (a copy unless `inplace`). `input_shape` is (C, H, W); taken from the calibration
    batches if not given. The result is checked (see `cut_model`); a group that cannot be cut
    correctly is kept whole with a `PinnedGroupWarning` naming it."""
    return cut_model(model, policy, criterion, input_shape, calibration, round_to, inplace).model


def trial_pins(
    model: nn.Module,
    input_shape: Sequence[int],
    graph: DependencyGraph,
    rate: float = 0.5,
    costs: CostModel | None = None,
) -> dict[str, str]:
    """Groups of `model` (traced as `graph`) that a trial cut at `rate` shows cannot be cut;
    each is pinned in `graph` too. A search calls this once so it never proposes them. With the
    trace's cost model (`costs`), a trial cut of every group at once by its index selection (no
    re-trace) that passes the check finds nothing to pin; only a failed one is cut again group
    by group (`cut_model`) to find the groups that break."""
    if costs is not None and _whole_cut_passes(model, input_shape, graph, costs, rate):
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinnedGroupWarning)
        found = cut_model(model, rate, "l1", input_shape=input_shape).pinned
    for key, why in found.items():
        if key in graph.by_key:
            graph.pin(key, why)
    return found


def _whole_cut_passes(
    model: nn.Module, input_shape: Sequence[int], graph: DependencyGraph, costs: CostModel, rate: float
) -> bool:
    """Whether `model` cut at `rate` in every group (the channels `cut_model` would choose, by
    L1), made by `costs.cut` on the trace `graph` already holds, passes `check_cut`."""
    x = example_input(model, input_shape)
    expected = output_shape(model, x)
    keep = resolve_policy(graph, rate)
    crit = get_criterion("l1")
    prepare_criterion(crit, model, graph, None)
    scores = group_scores(model, graph, crit)
    removed = {
        g.key: channels_to_cut(g, scores[g.key], g.channels - keep[g.key]) for g in graph.groups if g.pinned is None
    }
    try:
        check_cut(costs.cut(model, removed), x, expected, "every group")
    except Exception:  # noqa: BLE001 - any failure: the groups are cut one by one to find which
        return False
    return True


def channel_groups(model: nn.Module, input_shape: Sequence[int]) -> list[ChannelGroup]:
    """The prunable channel groups of a model, in model order."""
    return DependencyGraph(model, example_input(model, input_shape)).groups
