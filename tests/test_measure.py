"""Counters against hand-computed values, latency, peak memory and adaptive BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning import build_model, prune
from pruning.bn import recalibrate_bn
from pruning.measure import count_flops, count_params, measure_latency, model_stats, peak_memory_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_conv_flops_are_hand_computed_macs() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # every output element: 3 input channels x 3 x 3 kernel MACs; 8 x 16 x 16 outputs
    assert count_flops(conv, (3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3
    strided = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    assert count_flops(strided, (4, 10, 10)) == 6 * 5 * 5 * 4 * 3 * 3
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_flops(depthwise, (8, 6, 6)) == 8 * 6 * 6 * 1 * 3 * 3


def test_linear_flops_are_hand_computed_macs() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 7))
    assert count_flops(model, (3, 2, 2)) == 12 * 7
    assert count_params(model) == 12 * 7 + 7


def test_params_and_flops_fall_with_pruning_and_latency_is_positive() -> None:
    model = build_model("resnet20", in_channels=1).eval()
    pruned = prune(model, 0.5, "l1", input_shape=(1, 16, 16))
    assert count_params(pruned) < count_params(model)
    assert count_flops(pruned, (1, 16, 16)) < count_flops(model, (1, 16, 16))
    assert measure_latency(pruned, (1, 16, 16), batch_size=2, warmup=1, repeats=3) > 0
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert peak_memory_bytes(model, (1, 16, 16)) > weights
    assert peak_memory_bytes(pruned, (1, 16, 16)) < peak_memory_bytes(model, (1, 16, 16))
    stats = model_stats(pruned, (1, 16, 16), latency=False)
    assert stats.flops == count_flops(pruned, (1, 16, 16))
    assert stats.latency_ms is None


def test_peak_memory_counts_the_largest_layer_input_plus_output() -> None:
    conv = nn.Conv2d(2, 4, 1, bias=False)
    expected = (2 * 5 * 5 + 4 * 5 * 5) * 4 + 2 * 4 * 4  # activations + weights, float32
    assert peak_memory_bytes(conv, (2, 5, 5)) == expected


def test_adaptive_bn_reestimates_running_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
    batches = [(torch.randn(16, 2, 4, 4) * 3 + 1, torch.zeros(16)) for _ in range(4)]
    weight = model[0].weight.detach().clone()
    recalibrate_bn(model, batches)
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x, _ in batches])
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(model[1].running_var, torch.ones(3))
    assert model[1].momentum == 0.1
    assert not model.training
    torch.testing.assert_close(model[0].weight, weight)
