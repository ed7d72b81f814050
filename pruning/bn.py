"""BatchNorm recalibration.

Adaptive BN (Li et al., EagleEye, 2020): after pruning, the running statistics inherited from
the full network no longer match the sub-net's activations. Reset them and re-estimate them on
calibration batches from the training split, in train mode and without gradients."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """All BatchNorm layers of a model."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """Reset every BN's running mean/variance and re-estimate them as the exact average over
    `batches` (momentum None); weights are untouched. Returns the model in eval mode."""
    layers = bn_layers(model)
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
    device = next(model.parameters()).device
    model.train()
    for x, _ in batches:
        model(x.to(device))
    for bn, m in zip(layers, momenta, strict=True):
        bn.momentum = m
    return model.eval()
