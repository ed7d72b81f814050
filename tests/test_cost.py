"""The exact cost model (`pruning.cost`) against the counters on the really cut network, on every
zoo model and on layers the zoo lacks (grouped, transposed, concatenated), for seeded random
policies; and its index-selection cut against `pruning.cut.prune`."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from pruning.cost import trace
from pruning.criteria import get_criterion
from pruning.cut import group_scores, prune, resolve_policy
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.models import build_model, list_models


def counted(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    return {
        "flops": count_flops(model, shape),
        "params": count_params(model),
        "memory_bytes": peak_memory_bytes(model, shape),
    }


def random_policies(graph, n: int, seed: int) -> list[dict[str, int]]:
    rng = random.Random(seed)
    return [resolve_policy(graph, {g.key: rng.uniform(0.0, 0.9) for g in graph.groups}) for _ in range(n)]


class Mixed(nn.Module):
    """Layers the zoo lacks: a depthwise conv with bias, a concatenation, a transposed conv,
    and a linear after a flatten of a 4x4 map."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.b = nn.Conv2d(1, 12, 3, padding=1)
        self.down = nn.Conv2d(28, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.a(x))
        y = torch.relu(self.down(torch.cat([y, self.b(x)], 1)))
        y = nn.functional.adaptive_avg_pool2d(torch.relu(self.up(y)), 4)
        return self.fc2(torch.relu(self.fc1(torch.flatten(y, 1))))


# the detectors (inputs of a multiple of 32 px) are counted in test_yolo.py, at test widths
CASES = [(name, 16) for name in list_models() if not name.startswith("yolo")]
CASES += [("resnet20", 28), ("mobilenetv2", 28), ("convnet", 28)]


def build(name: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=1, input_size=size).eval()


@pytest.mark.parametrize("name, size", CASES)
def test_counts_equal_the_cut_network(name: str, size: int) -> None:
    """MACs, parameters and peak memory equal `count_flops`, `count_params` and
    `peak_memory_bytes` of the physically cut network, for random policies."""
    model, shape = build(name, size), (1, size, size)
    graph, costs = trace(model, shape)
    assert costs.exact, costs.reason
    assert costs.count({}) == counted(model, shape)
    for kept in random_policies(graph, 3, seed=size):
        assert costs.count(kept) == counted(prune(model, kept, "l1", input_shape=shape), shape), kept


def test_depthwise_transposed_concat_and_flatten_layers_count_exactly() -> None:
    model, shape = Mixed().eval(), (1, 16, 16)
    graph, costs = trace(model, shape)
    assert costs.exact, costs.reason
    cut_layers = {n for g in graph.groups for n in g.members + g.consumers}
    assert {"dw", "fc1"} <= cut_layers  # each odd layer is really cut
    up_inputs: list[int] = []
    for kept in random_policies(graph, 4, seed=3):
        cut = prune(model, kept, "l1", input_shape=shape)
        up = cut.get_submodule("up")
        assert isinstance(up, nn.ConvTranspose2d)
        up_inputs.append(up.in_channels)
        assert costs.count(kept) == counted(cut, shape), kept
    assert min(up_inputs) < 16  # the transposed conv's inputs are cut too
    full = costs.count({})
    some = {g.key: max(1, g.channels // 2) for g in graph.groups}
    assert costs.count(some)["flops"] < full["flops"]  # the cut is seen at all


class Grouped(nn.Module):
    """A ResNeXt-style grouped conv (4 groups of 4) between two plain convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.g = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.g(self.a(x))).mean((2, 3)))


def test_grouped_conv_cut_in_whole_groups_counts_exactly() -> None:
    model, shape = Grouped().eval(), (1, 16, 16)
    graph, costs = trace(model, shape)
    assert costs.exact, costs.reason
    grouped = next(g for g in graph.groups if "g.0" in g.members)
    assert grouped.unit == 4
    for kept in random_policies(graph, 4, seed=5):
        cut = prune(model, kept, "l1", input_shape=shape)
        conv = cut.get_submodule("g.0")
        assert isinstance(conv, nn.Conv2d)
        assert conv.groups == kept[grouped.key] // 4  # whole conv groups went
        assert costs.count(kept) == counted(cut, shape), kept


INEXACT_CORPUS = {"fpn"}  # its head reads a tensor DepGraph's trace does not hold: counted on the cut instead


@pytest.mark.filterwarnings("ignore")
def test_corpus_counts_equal_the_cut_network() -> None:
    """Every network of the bring-your-own-model corpus (tests/corpus: grouped, depthwise,
    concatenated, split, channels-last LayerNorm, layer scale...) counts exactly for random
    policies, or says it cannot (then the space counts the cut network)."""
    from corpus import CORPUS, INPUT_SHAPE
    from corpus import build as build_corpus

    for name in CORPUS:
        model = build_corpus(name)
        graph, costs = trace(model, INPUT_SHAPE)
        if name in INEXACT_CORPUS:
            assert not costs.exact
            continue
        assert costs.exact, f"{name}: {costs.reason}"
        for kept in random_policies(graph, 2, seed=7):
            assert costs.count(kept) == counted(prune(model, kept, "l1", input_shape=INPUT_SHAPE), INPUT_SHAPE), name


def test_query_makes_no_forward_and_no_copy() -> None:
    """A query only reads the trace: the model is never run (a forward would raise) and its
    weights are untouched."""
    model, shape = build("resnet20", 16), (1, 16, 16)
    graph, costs = trace(model, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def refuse(*_: object) -> None:
        raise AssertionError("a query ran the model")

    handle = model.register_forward_pre_hook(refuse)
    try:
        kept = random_policies(graph, 1, seed=0)[0]
        assert costs.flops(kept) < costs.full_flops
        assert costs.params(kept) < costs.full_params
        assert costs.memory_bytes(kept) < costs.full["memory_bytes"]
    finally:
        handle.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "convnet"])
def test_index_selection_cut_equals_prune(name: str) -> None:
    """The cut from the trace has the same weights and outputs as `prune` for the channels the
    criterion ranks lowest."""
    model, shape = build(name, 16), (1, 16, 16)
    graph, costs = trace(model, shape)
    scores = group_scores(model, graph, get_criterion("l1"))
    x = torch.randn(4, *shape)
    for kept in random_policies(graph, 2, seed=1):
        removed = {
            g.key: torch.argsort(scores[g.key], stable=True)[: g.channels - kept[g.key]].tolist() for g in graph.groups
        }
        fast, slow = costs.cut(model, removed), prune(model, kept, "l1", input_shape=shape)
        a, b = fast.state_dict(), slow.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        with torch.no_grad():
            assert torch.equal(fast(x), slow(x))
    assert costs.cut(model, {}).state_dict().keys() == model.state_dict().keys()


def test_a_layer_it_cannot_count_makes_it_inexact() -> None:
    """A matmul outside conv/linear modules is counted by `count_flops` but not by the model:
    the cost model says it is not exact (callers then count the cut network)."""

    class Extra(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x).mean((2, 3))
            return self.fc(y @ torch.eye(8))

    _, costs = trace(Extra().eval(), (1, 8, 8))
    assert not costs.exact
    assert "flops" in costs.reason
