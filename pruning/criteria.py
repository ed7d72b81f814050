"""Filter importance criteria: a score per output channel of a channel group, higher = keep.

Each criterion scores the channels of every member layer of a group and averages over the
members, so channels coupled through a residual add are judged together.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import PruningError
from .graph import ChannelGroup, DependencyGraph


def filters(module: nn.Module) -> torch.Tensor:
    """A layer's weights as one row per output channel."""
    return module.weight.detach().flatten(1)


class Criterion:
    """Base class: `prepare` sees calibration batches (data-dependent criteria collect
    statistics there), `scores` returns one importance value per channel of a group."""

    name: str = ""
    needs_data: bool = False

    def prepare(self, model: nn.Module, graph: DependencyGraph, batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Collect whatever the criterion needs before scoring; data-free criteria do nothing."""

    def scores(self, model: nn.Module, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        """Importance of each of the group's channels (shape `[group.channels]`)."""
        modules = dict(model.named_modules())
        per_member = [self.layer_scores(modules[m]) for m in group.members]
        return torch.stack([s.float() for s in per_member]).mean(0)

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        """Importance of one layer's output channels, for weight-based criteria."""
        raise NotImplementedError


class L1Norm(Criterion):
    """L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets", 2016)."""

    name = "l1"

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        return filters(module).abs().sum(1)


class L2Norm(Criterion):
    """L2 norm of each filter (Li et al. 2016 compare it with L1; the two barely differ)."""

    name = "l2"

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        return filters(module).norm(p=2, dim=1)


CRITERIA: dict[str, Callable[[], Criterion]] = {"l1": L1Norm, "l2": L2Norm}


def register_criterion(name: str, factory: Callable[[], Criterion]) -> None:
    """Make a criterion available by name."""
    CRITERIA[name] = factory


def get_criterion(name: str | Criterion) -> Criterion:
    """A criterion instance by name (or the instance itself)."""
    if isinstance(name, Criterion):
        return name
    if name not in CRITERIA:
        raise PruningError(f"unknown criterion {name!r}; choose one of: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]()


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Scale a group's scores to mean 1 so one global threshold compares groups of
    different layers (as Torch-Pruning's group normalisation does)."""
    return scores / scores.mean().clamp_min(1e-12)
