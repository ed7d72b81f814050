"""Layers that run at a chosen width by slicing their weights (Yu et al., "Slimmable Neural
Networks", 2018): a slimmable network keeps the first k channels of every layer.

Each layer reads its input width from the tensor it receives, so only the output width is
set from outside (per channel group, see `network.SlimmableNet`). A linear layer after a
flatten keeps the first k channels' features because the flatten is channel-major."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError


class SlimConv2d(nn.Conv2d):
    """A conv whose first `active_out` filters (all when None) see the input's channels.
    Depthwise convs (groups == in_channels) slice their groups along with their channels."""

    active_out: int | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> SlimConv2d:
        """Wrap an existing conv, sharing its parameters."""
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        if conv.groups > 1 and not depthwise:
            raise UnsupportedModelError("slimmable layers support plain and depthwise convs, not grouped ones")
        slim = cls.__new__(cls)
        slim.__dict__ = conv.__dict__.copy()
        slim._parameters = dict(conv._parameters)
        slim.active_out = None
        return slim

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        if self.depthwise:
            out, groups = cin, cin
            weight = self.weight[:cin]
        else:
            out = self.active_out or self.out_channels
            groups = 1
            weight = self.weight[:out, :cin]
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimLinear(nn.Linear):
    """A linear layer over the input's (leading) features, producing `active_out` outputs."""

    active_out: int | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SlimLinear:
        """Wrap an existing linear layer, sharing its parameters."""
        slim = cls.__new__(cls)
        slim.__dict__ = linear.__dict__.copy()
        slim._parameters = dict(linear._parameters)
        slim.active_out = None
        return slim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out or self.out_features
        bias = self.bias[:out] if self.bias is not None else None
        return F.linear(x, self.weight[:out, : x.shape[1]], bias)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """One BatchNorm shared by every width (US-Nets): the first k affine parameters and running
    statistics serve a k-channel input. The statistics are meaningful only for the width they
    were last calibrated at (`pruning.bn.recalibrate_bn` after choosing a width)."""

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> SlimBatchNorm2d:
        """Wrap an existing BatchNorm, sharing its parameters and buffers."""
        slim = cls.__new__(cls)
        slim.__dict__ = bn.__dict__.copy()
        slim._parameters = dict(bn._parameters)
        slim._buffers = dict(bn._buffers)
        return slim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        if k == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        # The running buffers exist exactly when track_running_stats (torch types them Optional).
        tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
        if self.training and tracked is not None:
            tracked.add_(1)
            factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        mean = running_mean[:k] if running_mean is not None else None
        var = running_var[:k] if running_var is not None else None
        weight = self.weight[:k] if self.affine else None
        bias = self.bias[:k] if self.affine else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)


class SwitchableBatchNorm2d(nn.Module):
    """Switchable BN (Yu et al. 2018): an independent BatchNorm (affine parameters and running
    statistics) for each of the network's widths; `active` picks the one in use."""

    def __init__(self, bn: nn.BatchNorm2d, sizes: Sequence[int]) -> None:
        super().__init__()
        self.num_features = bn.num_features
        self.bns = nn.ModuleList()
        for k in sizes:
            sub = nn.BatchNorm2d(k, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
            with torch.no_grad():
                if bn.affine:
                    sub.weight.copy_(bn.weight[:k])
                    sub.bias.copy_(bn.bias[:k])
            self.bns.append(sub)
        self.active = len(sizes) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self.active](x)

    def as_plain(self) -> nn.BatchNorm2d:
        """A full-width BatchNorm whose first channels hold the active width's BN (the rest
        are defaults, to be cut)."""
        src = self.bns[self.active]
        assert isinstance(src, nn.BatchNorm2d)  # every entry is one (see __init__)
        bn = nn.BatchNorm2d(self.num_features, src.eps, src.momentum, src.affine, src.track_running_stats)
        k = src.num_features
        with torch.no_grad():
            if src.affine:
                bn.weight[:k] = src.weight
                bn.bias[:k] = src.bias
            # The running buffers exist exactly when track_running_stats, the same in both.
            for mine, theirs in ((bn.running_mean, src.running_mean), (bn.running_var, src.running_var)):
                if mine is not None and theirs is not None:
                    mine[:k] = theirs
            if bn.num_batches_tracked is not None and src.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(src.num_batches_tracked)
        return bn


def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size attribute (typed as any length) as the pair it is."""
    a, b = v
    return a, b


def plain_copy(module: nn.Module) -> nn.Module | None:
    """The plain torch layer a slimmable layer stands for (full width, same tensors), or None
    for layers that are not slimmable."""
    if isinstance(module, SwitchableBatchNorm2d):
        return module.as_plain()
    if isinstance(module, SlimConv2d):
        padding = module.padding
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            _pair(module.kernel_size),
            _pair(module.stride),
            padding if isinstance(padding, str) else _pair(padding),
            _pair(module.dilation),
            module.groups,
            module.bias is not None,
        )
        conv.load_state_dict(module.state_dict())
        return conv
    if isinstance(module, SlimLinear):
        linear = nn.Linear(module.in_features, module.out_features, module.bias is not None)
        linear.load_state_dict(module.state_dict())
        return linear
    if isinstance(module, SlimBatchNorm2d):
        bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        return bn
    return None
