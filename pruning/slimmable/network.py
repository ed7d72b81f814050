"""A zoo model made slimmable: one set of weights that runs at any width of a list
(switchable BN, Yu et al. 2018) or of a range, per channel group too (universally slimmable,
Yu & Huang 2019).

Widths are driven per channel group of `pruning.graph.DependencyGraph`, so channels coupled
through a residual add stay consistent, and a per-group configuration (a kept-channel count
per group, as AutoSlim searches) needs nothing more. Every group keeps its first k channels;
`export` cuts exactly those channels out of a plain copy with `pruning.cut.prune`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..bn import recalibrate_bn
from ..criteria import FirstK  # re-exported: the criterion a slimmable export cuts by
from ..cut import example_input, kept_channels, prune
from ..errors import PruningError
from ..graph import DependencyGraph
from .layers import SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d, plain_copy

Config = dict[str, int]
"""Kept channels per channel group (by group key)."""


def width_channels(channels: int, width: float) -> int:
    """Channels a group of `channels` keeps at width multiplier `width` (at least one)."""
    return max(1, min(channels, round(channels * width)))


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


class SlimmableNet(nn.Module):
    """A zoo network whose convs/linears slice their weights to the active configuration.

    `widths` are the multipliers it is trained at; `universal` means one shared BN per layer
    and any width in [min(widths), max(widths)], per group too (statistics are calibrated per
    width after training); otherwise each width of `widths` has its own switchable BN."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        widths: Sequence[float],
        universal: bool = False,
        zoo: str | None = None,
        zoo_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        widths = sorted({float(w) for w in widths})
        if not widths or widths[0] <= 0 or widths[-1] > 1:
            raise PruningError(f"width multipliers must lie in (0, 1], got {widths}")
        self.widths = widths
        self.universal = bool(universal)
        self.input_shape = tuple(int(s) for s in input_shape[-3:])
        self.zoo = zoo
        self.zoo_args = dict(zoo_args or {})
        net = copy.deepcopy(model).cpu().eval()
        graph = DependencyGraph(net, example_input(net, self.input_shape))
        self.group_channels: dict[str, int] = {g.key: g.channels for g in graph.groups}
        self.group_members: dict[str, list[str]] = {g.key: list(g.members) for g in graph.groups}
        self.group_bns: dict[str, list[str]] = {g.key: list(g.bns) for g in graph.groups}
        self.stem_key = next((g.key for g in graph.groups if g.is_stem), None)
        self._swap_layers(net)
        self.net = net
        self.config: Config = self.config_for_width(widths[-1])
        self.set_config(self.config)

    def _swap_layers(self, net: nn.Module) -> None:
        modules = dict(net.named_modules())
        for name, m in list(modules.items()):
            if isinstance(m, nn.Conv2d):
                _set_module(net, name, SlimConv2d.from_conv(m))
            elif isinstance(m, nn.Linear):
                _set_module(net, name, SlimLinear.from_linear(m))
        for key, bns in self.group_bns.items():
            for name in bns:
                bn = modules[name]
                if not isinstance(bn, nn.BatchNorm2d):
                    raise PruningError(f"slimmable networks support BatchNorm2d, not {type(bn).__name__} ({name})")
                if self.universal:
                    _set_module(net, name, SlimBatchNorm2d.from_bn(bn))
                else:
                    sizes = [width_channels(self.group_channels[key], w) for w in self.widths]
                    _set_module(net, name, SwitchableBatchNorm2d(bn, sizes))
        grouped = {b for bns in self.group_bns.values() for b in bns}
        loose = [n for n, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm) and n not in grouped]
        if loose:
            raise PruningError(
                f"BatchNorm layers outside any channel group cannot be made slimmable: {', '.join(loose)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- widths and configurations -------------------------------------------------------------

    @property
    def min_width(self) -> float:
        return self.widths[0]

    @property
    def max_width(self) -> float:
        return self.widths[-1]

    def config_for_width(self, width: float) -> Config:
        """The uniform configuration of one width multiplier."""
        return {k: width_channels(c, width) for k, c in self.group_channels.items()}

    def bounds(self) -> dict[str, tuple[int, int]]:
        """Smallest and largest kept channels of each group that the training covered."""
        return {
            k: (width_channels(c, self.min_width), width_channels(c, self.max_width))
            for k, c in self.group_channels.items()
        }

    def random_config(self, rng: random.Random, per_layer: bool = True) -> Config:
        """A random configuration in the trained range: one width per group (`per_layer`) or
        one for the whole network, drawn uniformly in [min_width, max_width]."""
        if not per_layer:
            return self.config_for_width(rng.uniform(self.min_width, self.max_width))
        return {
            k: width_channels(c, rng.uniform(self.min_width, self.max_width)) for k, c in self.group_channels.items()
        }

    def _width_index(self, config: Mapping[str, int]) -> int:
        for i, w in enumerate(self.widths):
            if self.config_for_width(w) == dict(config):
                return i
        raise PruningError(
            "a network with switchable BN runs only at its trained widths "
            f"{self.widths}; train it with universal=True for other configurations"
        )

    def set_config(self, config: Mapping[str, int]) -> None:
        """Run at a per-group configuration (missing groups keep their full width)."""
        unknown = set(config) - set(self.group_channels)
        if unknown:
            raise PruningError(f"configuration names unknown channel groups: {', '.join(sorted(unknown))}")
        full = {k: int(config.get(k, c)) for k, c in self.group_channels.items()}
        for k, n in full.items():
            if not 1 <= n <= self.group_channels[k]:
                raise PruningError(f"group {k} cannot keep {n} of {self.group_channels[k]} channels")
        index = None if self.universal else self._width_index(full)
        modules = dict(self.net.named_modules())
        for key, n in full.items():
            for name in self.group_members[key]:
                modules[name].active_out = n
            if index is not None:
                for name in self.group_bns[key]:
                    modules[name].active = index
        self.config = full

    def set_width(self, width: float) -> None:
        """Run every group at the same width multiplier."""
        if not self.universal and float(width) not in self.widths:
            raise PruningError(f"width {width} is not one of the trained widths {self.widths}")
        if self.universal and not self.min_width - 1e-9 <= width <= self.max_width + 1e-9:
            raise PruningError(f"width {width} is outside the trained range [{self.min_width}, {self.max_width}]")
        self.set_config(self.config_for_width(width))

    # -- policies (the search layer's language) ------------------------------------------------

    def config_to_policy(self, config: Mapping[str, int]) -> dict[str, float]:
        """Pruning rates that `pruning.cut` turns back into exactly these kept counts."""
        return {k: (c - int(config.get(k, c))) / c for k, c in self.group_channels.items()}

    def policy_to_config(self, policy: Mapping[str, float | int]) -> Config:
        """Kept counts of a policy (rates or counts), as `pruning.cut.kept_channels` computes them."""
        return {k: kept_channels(c, policy.get(k, 0.0)) for k, c in self.group_channels.items()}

    # -- plain models ----------------------------------------------------------------------------

    def to_plain(self) -> nn.Module:
        """The full-width plain network (ordinary torch layers) with the active width's BN."""
        plain = copy.deepcopy(self.net)
        for name, m in list(plain.named_modules()):
            replacement = plain_copy(m)
            if replacement is not None:
                _set_module(plain, name, replacement)
        return plain.eval()

    def export(self, config: Mapping[str, int] | float | None = None) -> nn.Module:
        """Materialise a configuration (or a uniform width; default the active one) as a plain
        model with the channels cut for real, which computes what this network computes there."""
        if isinstance(config, Mapping):
            self.set_config(config)
        elif config is not None:
            self.set_width(float(config))
        plain = self.to_plain()
        return prune(plain, dict(self.config), FirstK(), input_shape=self.input_shape, inplace=True).eval()

    def describe(self) -> dict[str, Any]:
        """The JSON-able facts that rebuild this network around its saved weights."""
        return {
            "zoo": self.zoo,
            "args": self.zoo_args,
            "widths": self.widths,
            "universal": self.universal,
            "input_shape": list(self.input_shape),
            "groups": dict(self.group_channels),
        }


def make_slimmable(
    model: nn.Module,
    input_shape: Sequence[int],
    widths: Sequence[float],
    universal: bool = False,
    zoo: str | None = None,
    zoo_args: Mapping[str, Any] | None = None,
) -> SlimmableNet:
    """A slimmable copy of `model` for `widths` (the model itself is left alone)."""
    return SlimmableNet(model, input_shape, widths, universal, zoo, zoo_args)


def set_width(model: SlimmableNet, width: float) -> SlimmableNet:
    """Make `model` run every group at `width`; returns it."""
    model.set_width(width)
    return model


def set_config(model: SlimmableNet, config: Mapping[str, int]) -> SlimmableNet:
    """Make `model` run at a per-group configuration (kept channels per group); returns it."""
    model.set_config(config)
    return model


def calibrate_bn(model: SlimmableNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> SlimmableNet:
    """US-Nets' post-training BN calibration: private statistics of the active configuration,
    computed exactly on `batches` (the engine's adaptive BN). Switchable-BN networks already
    keep private statistics per width, so calibrating them is refused."""
    if not model.universal:
        raise PruningError("switchable BN keeps private statistics per width; calibration is for universal networks")
    recalibrate_bn(model, batches)
    return model


def export_config(model: SlimmableNet, config: Mapping[str, int] | float | None = None) -> nn.Module:
    """A plain zoo model of one width or per-group configuration, channels cut for real."""
    return model.export(config)
