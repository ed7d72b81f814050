"""Structured cutting: `prune(model, policy, criterion)` returns a physically smaller model.

A policy maps each prunable channel group (by key, see `graph.DependencyGraph`) to a pruning
rate in [0, 1) or, as an int, to the number of channels to keep. No group is cut to zero
channels, and kept counts can be rounded up to a multiple (e.g. 8) for hardware.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .criteria import Criterion, get_criterion
from .errors import PruningError
from .graph import ChannelGroup, DependencyGraph

Policy = dict[str, float]
"""A pruning policy, the one type for it everywhere (engine and search): per channel group key, the
share of its channels to cut, in [0, 1), or, as an int, the number to keep. Functions that only read
a policy take any `Mapping[str, float]`."""


def kept_channels(channels: int, amount: float | int, round_to: int = 1) -> int:
    """Channels a group keeps for a rate (float) or a kept count (int), at least one,
    rounded up to a multiple of `round_to` but never above the original."""
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
    return keep


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
    return {g.key: kept_channels(g.channels, policy.get(g.key, 0.0), round_to) for g in graph.groups}


def example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero batch of one on the model's device, for tracing."""
    device = next(model.parameters()).device
    return torch.zeros(1, *input_shape[-3:], device=device)


def group_scores(model: nn.Module, graph: DependencyGraph, criterion: Criterion) -> dict[str, torch.Tensor]:
    """The criterion's per-channel scores of every group, on the CPU."""
    return {g.key: criterion.scores(model, graph, g).detach().cpu() for g in graph.groups}


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
    batches if not given."""
    if input_shape is None:
        if not calibration:
            raise PruningError("prune needs input_shape or calibration batches to trace the model")
        input_shape = tuple(calibration[0][0].shape[1:])
    target = model if inplace else copy.deepcopy(model)
    graph = DependencyGraph(target, example_input(target, input_shape))
    keep = resolve_policy(graph, policy, round_to)
    crit = get_criterion(criterion)
    prepare_criterion(crit, target, graph, calibration)
    scores = group_scores(target, graph, crit)
    for g in graph.groups:
        n_cut = g.channels - keep[g.key]
        if n_cut > 0:
            order = torch.argsort(scores[g.key], stable=True)
            graph.prune_group(g.key, order[:n_cut].tolist())
    return target


def channel_groups(model: nn.Module, input_shape: Sequence[int]) -> list[ChannelGroup]:
    """The prunable channel groups of a model, in model order."""
    return DependencyGraph(model, example_input(model, input_shape)).groups
