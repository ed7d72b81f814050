"""The channel-dependency graph: which output channels must be cut together.

Built on Torch-Pruning's DepGraph (Fang et al., CVPR 2023), which traces the model and follows
channels through residual adds, concatenations, depthwise convs, BatchNorm and the flatten into
a linear layer. This module turns its groups into stable, named `ChannelGroup`s that a policy
can address, ordered as the layers appear in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .errors import UnsupportedModelError

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass
class ChannelGroup:
    """Output channels of one or more layers that must be cut together.

    `key` names the group by its first layer in model order; `members` are the convs/linears
    whose output channels are cut, `bns` their BatchNorms, `consumers` the layers whose
    input channels shrink with them."""

    key: str
    channels: int
    members: list[str]
    bns: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    is_stem: bool = False
    depthwise: bool = False


def output_layer(model: nn.Module) -> nn.Module | None:
    """The classifier: the last Linear (or last conv if there is none) in module order."""
    last: nn.Module | None = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                last = m
    return last


class DependencyGraph:
    """Prunable channel groups of a model, traced with one forward on `example_inputs`."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, ignored: list[str] | None = None) -> None:
        self.model = model
        self.example_inputs = example_inputs
        names = {m: n for n, m in model.named_modules()}
        self._names = names
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        modules = dict(model.named_modules())
        ignored_modules = [modules[n] for n in (ignored or []) if n in modules]
        out = output_layer(model)
        if out is not None:
            ignored_modules.append(out)
        try:
            self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
            raw = list(self.dg.get_all_groups(ignored_layers=ignored_modules, root_module_types=list(PRUNABLE)))
        except Exception as exc:  # the tracer fails in many ways on unsupported code
            raise UnsupportedModelError(f"cannot trace the model's channel dependencies: {exc}") from exc
        first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
        groups: list[ChannelGroup] = []
        self._roots: dict[str, nn.Module] = {}
        for g in raw:
            members, bns, consumers = [], [], []
            for dep, _ in g:
                mod = dep.target.module
                name = names.get(mod)
                if name is None:
                    continue
                handler = getattr(dep.handler, "__name__", "")
                if isinstance(mod, PRUNABLE) and "out_channels" in handler:
                    members.append(name)
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    bns.append(name)
                elif isinstance(mod, PRUNABLE) and "in_channels" in handler:
                    consumers.append(name)
            if not members:
                continue
            members = sorted(set(members), key=order.__getitem__)
            root = modules[members[0]]
            channels = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
            depthwise = any(isinstance(modules[m], nn.Conv2d) and modules[m].groups > 1 for m in members)
            groups.append(
                ChannelGroup(
                    key=members[0],
                    channels=channels,
                    members=members,
                    bns=sorted(set(bns), key=order.__getitem__),
                    consumers=sorted(set(consumers) - set(members), key=order.__getitem__),
                    is_stem=first_conv in members,
                    depthwise=depthwise,
                )
            )
            self._roots[members[0]] = root
        self.groups = sorted(groups, key=lambda grp: order[grp.key])
        self.by_key = {grp.key: grp for grp in self.groups}

    def following_bn(self, member: str) -> str | None:
        """The BatchNorm that directly consumes a member layer's output, if any (where
        data-dependent criteria read activations: after BN, before the ReLU)."""
        module = next((m for m, n in self._names.items() if n == member), None)
        node = self.dg.module2node.get(module) if module is not None else None
        if node is None:
            return None
        for out in node.outputs:
            if isinstance(out.module, nn.modules.batchnorm._BatchNorm) and out.module in self._names:
                return self._names[out.module]
        return None

    def prune_group(self, key: str, idxs: list[int]) -> None:
        """Remove output channels `idxs` of group `key` and everything coupled to them."""
        if not idxs:
            return
        root = self._roots[key]
        fn = tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else tp.prune_linear_out_channels
        group = self.dg.get_pruning_group(root, fn, idxs=sorted(idxs))
        group.prune()
