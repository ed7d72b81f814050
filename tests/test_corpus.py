"""The corpus (tests/corpus: 26 networks after the standard CNN families, 3x32x32) cut for real.

For every network: the `uniform` and `global` strategies search a policy for half the FLOPs
(in process, through `search.runner`, scored by a forward check instead of accuracy to stay
fast); the network the search returns runs, keeps its output shape, needs at most 0.55 of the
original FLOPs and keeps every pinned group whole. Two networks (`Entry.limit`: Res2Net,
GhostNet) pin groups holding too many FLOPs for half to go: the search says so, and they are
cut to 0.7 instead. And at 50% of every group's channels, the cut network computes exactly
what the original computes with the cut channels' contributions removed (each consumer's
columns for them zeroed, located by the graph's own mapping), which catches a cut that drops
one set of channels on the producing side and another on the consuming side."""

from __future__ import annotations

import pytest
import torch
from corpus import CORPUS, INPUT_SHAPE, build, finite, search_cut, shapes, target, without_channels
from torch import nn

from pruning.cut import cut_model, example_input
from pruning.graph import DependencyGraph
from pruning.measure import count_flops
from search.base import SearchError
from search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = list(CORPUS)
SPACES: dict[str, tuple[nn.Module, SearchSpace]] = {}


def space_for(name: str) -> tuple[nn.Module, SearchSpace]:
    """The network and its search space, built once per network for both strategies."""
    if name not in SPACES:
        model = build(name)
        SPACES[name] = (model, SearchSpace(model, INPUT_SHAPE, f"flops={target(name)}"))
    return SPACES[name]


@pytest.mark.parametrize("name", [n for n in NAMES if CORPUS[n].limit])
def test_a_limited_network_says_why_half_the_flops_cannot_go(name: str) -> None:
    """Its pinned groups are reported with their reasons, and the search refuses half the
    FLOPs with the smallest network the pins allow (the corpus then asks for less)."""
    model, space = space_for(name)
    assert space.engine_pins
    with pytest.raises(SearchError, match="infeasible"):
        SearchSpace(model, INPUT_SHAPE, "flops=0.5")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strategy", ["uniform", "global"])
def test_corpus_network_is_cut_to_half_the_flops(name: str, strategy: str) -> None:
    model, space = space_for(name)
    with torch.no_grad():
        shape = shapes(model(torch.randn(2, *INPUT_SHAPE)))
    best, cut = search_cut(model, space, strategy)
    assert best.score == 1.0
    with torch.no_grad():
        out = cut(torch.randn(2, *INPUT_SHAPE))
    assert shapes(out) == shape  # every output, by name
    assert finite(out)
    f0, f1 = count_flops(model, INPUT_SHAPE), count_flops(cut, INPUT_SHAPE)
    assert f1 <= (target(name) + 0.05) * f0, f"{name}: {f1 / f0:.3f} of the FLOPs"
    assert f1 == best.flops
    kept = space.kept(best.policy)
    for key, why in space.engine_pins.items():  # pinned groups are reported and kept whole
        assert why
        assert kept[key] == space.by_key[key].channels
    cut_groups = {g.key: g.channels for g in DependencyGraph(cut, example_input(cut, INPUT_SHAPE)).groups}
    assert sum(cut_groups.values()) < sum(g.channels for g in space.groups)


def channel_wise_norm(model: nn.Module, bns: list[str]) -> bool:
    """Whether a group passes through a LayerNorm/GroupNorm, whose statistics every channel
    enters (removing a channel changes the others: no exact reference exists)."""
    modules = dict(model.named_modules())
    return any(isinstance(modules[b], nn.LayerNorm | nn.GroupNorm) for b in bns)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_cut_equals_the_network_without_those_channels(name: str) -> None:
    """Half of every group's channels (groups under a LayerNorm aside, e.g. ConvNeXt's stream)."""
    model = build(name)
    graph = DependencyGraph(model, example_input(model, INPUT_SHAPE))
    policy = {g.key: 0.5 for g in graph.groups if not channel_wise_norm(model, g.bns)}
    out = cut_model(model, policy, "l1", input_shape=INPUT_SHAPE)
    removed = {
        key: sorted(set(range(graph.by_key[key].channels)) - set(kept))
        for key, kept in out.kept.items()
        if key not in out.pinned and len(kept) < graph.by_key[key].channels
    }
    assert removed
    x = torch.randn(3, *INPUT_SHAPE)
    ref = without_channels(model, removed, INPUT_SHAPE)
    with torch.no_grad():
        after, before = out.model(x), ref(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
