"""An exact, analytic model of FLOPs and parameters as functions of the kept channels per group.

Every conv and linear layer's MACs are `full_macs * (out_kept/out) * (in_kept/in)` (depthwise:
the output ratio only), where the ratios come from the groups that own its output and input
channels; its parameters scale the same way, and each BatchNorm keeps two per channel. This is
what the engine's counters give on the cut model, without cutting: AMC's environment and
MetaPruning's constraint check call it thousands of times. The layer table also carries each
group's conv dimensions for AMC's state vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pruning.graph import ChannelGroup


@dataclass
class Layer:
    """One conv or linear layer: its groups, its shape and its full cost."""

    name: str
    out_group: str | None
    in_group: str | None
    out_channels: int
    in_channels: int
    kernel: int
    stride: int
    height: int
    width: int
    macs: int
    weight_params: int
    bias_params: int
    depthwise: bool


def layer_table(model: nn.Module, input_shape: Sequence[int], groups: Sequence[ChannelGroup]) -> list[Layer]:
    """Conv/linear layers in model order with their full MACs (one forward with hooks)."""
    out_of = {m: g.key for g in groups for m in g.members}
    in_of = {c: g.key for g in groups for c in g.consumers}
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):

            def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
                seen.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape[-3:], device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers = []
    for name, m in model.named_modules():
        if name not in seen:
            continue
        in_shape, out_shape = seen[name]
        bias = m.bias.numel() if m.bias is not None else 0
        if isinstance(m, nn.Conv2d):
            spatial = out_shape[2] * out_shape[3]
            per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            layers.append(
                Layer(
                    name,
                    out_of.get(name),
                    in_of.get(name),
                    m.out_channels,
                    m.in_channels,
                    m.kernel_size[0],
                    m.stride[0],
                    in_shape[2],
                    in_shape[3],
                    spatial * m.out_channels * per_out,
                    m.weight.numel(),
                    bias,
                    m.groups > 1,
                )
            )
        else:
            tokens = int(torch.tensor(out_shape[1:-1]).prod()) if len(out_shape) > 2 else 1
            layers.append(
                Layer(
                    name,
                    out_of.get(name),
                    in_of.get(name),
                    m.out_features,
                    m.in_features,
                    1,
                    1,
                    1,
                    1,
                    tokens * m.out_features * m.in_features,
                    m.weight.numel(),
                    bias,
                    False,
                )
            )
    return layers


class CostModel:
    """FLOPs (MACs) and parameters of the network cut to given kept counts per group."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], groups: Sequence[ChannelGroup]) -> None:
        self.groups = list(groups)
        self.channels = {g.key: g.channels for g in groups}
        self.layers = layer_table(model, input_shape, groups)
        counted = sum(layer.weight_params + layer.bias_params for layer in self.layers)
        modules = dict(model.named_modules())
        self.bn_params = {g.key: sum(p.numel() for b in g.bns for p in modules[b].parameters()) for g in groups}
        bn_total = sum(self.bn_params.values())
        self.fixed_params = sum(p.numel() for p in model.parameters()) - counted - bn_total
        self.full_flops = self.flops({})
        self.full_params = self.params({})

    def _ratio(self, key: str | None, kept: Mapping[str, int]) -> float:
        if key is None:
            return 1.0
        return kept.get(key, self.channels[key]) / self.channels[key]

    def flops(self, kept: Mapping[str, int]) -> float:
        """MACs with `kept[group]` channels per group (missing groups keep all)."""
        total = 0.0
        for layer in self.layers:
            r_out = self._ratio(layer.out_group, kept)
            r_in = 1.0 if layer.depthwise else self._ratio(layer.in_group, kept)
            total += layer.macs * r_out * r_in
        return total

    def layer_flops(self, layer: Layer, kept: Mapping[str, int]) -> float:
        """MACs of one layer under `kept`."""
        r_in = 1.0 if layer.depthwise else self._ratio(layer.in_group, kept)
        return layer.macs * self._ratio(layer.out_group, kept) * r_in

    def params(self, kept: Mapping[str, int]) -> float:
        """Parameters with `kept[group]` channels per group (BN affine included)."""
        total = float(self.fixed_params)
        for layer in self.layers:
            r_out = self._ratio(layer.out_group, kept)
            r_in = 1.0 if layer.depthwise else self._ratio(layer.in_group, kept)
            total += layer.weight_params * r_out * r_in + layer.bias_params * r_out
        for key, n in self.bn_params.items():
            total += n * self._ratio(key, kept)
        return total

    def cost(self, kind: str, kept: Mapping[str, int]) -> float:
        """The analytic resource of `kind` ("flops" or "params")."""
        return self.flops(kept) if kind == "flops" else self.params(kept)
