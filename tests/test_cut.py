"""Structured cutting through the dependency graph, on every zoo model."""

from __future__ import annotations

import pytest
import torch

from pruning import build_model, channel_groups, prune
from pruning.errors import PruningError
from pruning.measure import count_flops, count_params

SHAPE = (1, 16, 16)
ZOO = ["convnet", "resnet18", "resnet20", "resnet56", "vgg16_bn", "mobilenetv2"]


def _zero_channels(model: torch.nn.Module, n: int) -> dict[str, int]:
    """Zero every weight of the first `n` channels of each group (conv filters, BN affine and
    running mean) so their outputs are exactly zero; returns the expected kept counts."""
    modules = dict(model.named_modules())
    kept = {}
    for g in channel_groups(model, SHAPE):
        k = min(n, g.channels - 1)
        for name in g.members:
            m = modules[name]
            m.weight.data[:k] = 0
            if m.bias is not None:
                m.bias.data[:k] = 0
        for name in g.bns:
            bn = modules[name]
            bn.weight.data[:k] = 0
            bn.bias.data[:k] = 0
            bn.running_mean[:k] = 0
        kept[g.key] = g.channels - k
    return kept


@pytest.mark.parametrize("name", ZOO)
def test_removing_zero_channels_keeps_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, input_size=16).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    kept = _zero_channels(model, 4)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        before = model(x)
    pruned = prune(model, kept, "l1", input_shape=SHAPE)
    with torch.no_grad():
        after = pruned(x)
    assert count_params(pruned) < count_params(model)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_uniform_rates_shrink_flops_and_params(name: str, rate: float) -> None:
    model = build_model(name, in_channels=1, input_size=16).eval()
    f0, p0 = count_flops(model, SHAPE), count_params(model)
    pruned = prune(model, rate, "l1", input_shape=SHAPE)
    out = pruned(torch.randn(2, *SHAPE))
    assert out.shape == (2, 10)
    f1, p1 = count_flops(pruned, SHAPE), count_params(pruned)
    # channels keep (1-r) on both sides of most convs: FLOPs fall roughly as (1-r)^2
    assert f1 < f0 * (1 - rate) ** 2 * 1.25
    assert p1 < p0 * (1 - rate) ** 2 * 1.25


def test_never_cut_to_zero_and_round_to_multiple() -> None:
    model = build_model("resnet20", in_channels=1)
    groups = channel_groups(model, SHAPE)
    pruned = prune(model, {g.key: 0.99 for g in groups}, "l1", input_shape=SHAPE)
    for g in channel_groups(pruned, SHAPE):
        assert g.channels >= 1
    rounded = prune(model, 0.55, "l1", input_shape=SHAPE, round_to=8)
    for g in channel_groups(rounded, SHAPE):
        assert g.channels % 8 == 0


def test_bad_policy_is_a_clear_error() -> None:
    model = build_model("convnet", in_channels=1)
    with pytest.raises(PruningError, match="outside"):
        prune(model, 1.5, "l1", input_shape=SHAPE)
    with pytest.raises(PruningError, match="unknown channel groups"):
        prune(model, {"nope": 0.5}, "l1", input_shape=SHAPE)
    with pytest.raises(PruningError, match="unknown criterion"):
        prune(model, 0.5, "magic", input_shape=SHAPE)
