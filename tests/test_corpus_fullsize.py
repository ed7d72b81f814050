"""torchvision's VGG-11-BN, AlexNet and Wide ResNet-50-2 (tests/corpus/fullsize.py) as a team
sends them: the definitions hold torchvision's parameter counts, and each network's structure
goes through `.pt2` export (dynamic batch), `pruning.intake`, the dependency trace and a cut of
half of every group's channels, which must compute what the network computes with those
channels' contributions removed. The structure runs at an eighth of the widths and 64 px (the
smallest input AlexNet's stem and pools take) to cost seconds; `bench/fullsize.py` runs the
full-size programs (233 to 517 MB) through the REST path with every default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus import FULL_SIZE, build, without_channels

from pruning.cut import cut_model, example_input
from pruning.export import export_program
from pruning.graph import DependencyGraph
from pruning.intake import intake_program
from pruning.measure import count_flops

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION_PARAMS = {"tv_vgg11_bn": 132_868_840, "tv_alexnet": 61_100_840, "tv_wide_resnet50_2": 68_883_240}
"""torchvision's published parameter counts of vgg11_bn, alexnet and wide_resnet50_2 (1000 classes)."""

GROUPS = {"tv_vgg11_bn": 8 + 2, "tv_alexnet": 5 + 2, "tv_wide_resnet50_2": 1 + 4 + 2 * 16}
"""Channel groups the structure implies: one per conv (VGG, AlexNet) and per hidden linear layer;
Wide ResNet's stem, one residual stream per stage and two inner widths in each of 16 blocks."""

SMALL_INPUT = (3, 64, 64)


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_network_has_torchvisions_parameter_count(name: str) -> None:
    with torch.device("meta"):  # no memory, no init cost: only the shapes count
        model = FULL_SIZE[name].factory(num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_structure_goes_through_intake_and_is_cut(name: str, tmp_path: Path) -> None:
    model = build(name, width=8)
    intake = intake_program(export_program(model, tmp_path / f"{name}.pt2", SMALL_INPUT))
    net = intake.module
    x = torch.randn(2, *SMALL_INPUT)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), atol=1e-4, rtol=1e-4)
    graph = DependencyGraph(net, example_input(net, SMALL_INPUT))
    assert len(graph.groups) == GROUPS[name]
    out = cut_model(net, {g.key: 0.5 for g in graph.groups}, "l1", input_shape=SMALL_INPUT)
    assert not out.pinned
    removed = {
        key: sorted(set(range(graph.by_key[key].channels)) - set(kept))
        for key, kept in out.kept.items()
        if len(kept) < graph.by_key[key].channels
    }
    assert set(removed) == {g.key for g in graph.groups}
    ref = without_channels(net, removed, SMALL_INPUT)  # traces with autograd: outside no_grad
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), ref(x), atol=1e-4, rtol=1e-4)
    assert count_flops(out.model, SMALL_INPUT) < 0.35 * count_flops(net, SMALL_INPUT)
