"""Residual streams: the graph marks the channel groups a residual add joins, and the search
space keeps them whole (`streams="whole"`), cuts them last (`"last"`), or like any group
(`"search"`), from the engine through the job config, the REST check and a whole job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning.graph import DependencyGraph
from pruning.models import build_model
from search.base import SearchError
from search.space import SearchSpace
from workers.config import JobConfig
from workers.executor import _space_args

SHAPE = (1, 16, 16)


def _resnet20() -> nn.Module:
    return build_model("resnet20", num_classes=10, in_channels=1, input_size=16)


class _SqueezeExcite(nn.Module):
    """A conv whose output a squeeze-and-excitation branch multiplies: channels joined by a
    product, not a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = y * torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return self.head(y.mean((2, 3)))


def test_the_graph_marks_residual_streams_and_nothing_else() -> None:
    graph = DependencyGraph(_resnet20(), torch.randn(1, *SHAPE))
    assert {g.key for g in graph.groups if g.stream} == {"conv1", "layer2.0.conv2", "layer3.0.conv2"}
    net = build_model("mobilenetv2", num_classes=10, in_channels=1, input_size=16)
    streams = [g for g in DependencyGraph(net, torch.randn(1, *SHAPE)).groups if g.stream]
    # the projections of the stages whose blocks repeat (a residual add joins them), never an expansion
    assert streams
    assert all(g.key.endswith("conv.2.0") and not g.depthwise for g in streams)
    assert all(len(g.members) > 1 for g in streams)
    se = DependencyGraph(_SqueezeExcite(), torch.randn(1, *SHAPE))
    joined = se.by_key["conv"]
    assert "fc2" in joined.members
    assert not joined.stream


def test_whole_pins_the_streams_and_says_why() -> None:
    space = SearchSpace(_resnet20(), SHAPE, "flops=0.3", streams="whole")
    assert space.stream_pins == ["layer2.0.conv2", "layer3.0.conv2"]
    assert not set(space.stream_pins) & set(space.keys)
    kept = space.kept(space.smallest_policy())
    assert all(kept[k] == space.by_key[k].channels for k in space.stream_pins)
    assert space.feasible(space.smallest_policy())
    groups = {g["key"]: g for g in space.describe()["groups"]}
    assert groups["layer2.0.conv2"]["stream"]
    assert groups["layer2.0.conv2"]["pinned"] == 0.0
    assert "residual stream" in groups["layer2.0.conv2"]["pinned_reason"]
    assert groups["layer2.0.conv1"]["pinned_reason"] is None
    searched = SearchSpace(_resnet20(), SHAPE, "flops=0.3")
    assert set(searched.keys) == set(space.keys) | set(space.stream_pins)


def test_last_keeps_streams_whole_when_it_can_and_cuts_them_least_when_it_must() -> None:
    model = _resnet20()
    easy = SearchSpace(model, SHAPE, "flops=0.3", streams="last")
    assert easy.stream_pins == ["layer2.0.conv2", "layer3.0.conv2"]
    assert easy.bounds == SearchSpace(model, SHAPE, "flops=0.3", streams="whole").bounds
    # at 10% the inner widths at their floor (max_rate 0.9) keep 11% of the FLOPs: streams must give a little
    with pytest.raises(SearchError, match="2 residual streams kept whole"):
        SearchSpace(model, SHAPE, "flops=0.1", streams="whole")
    hard = SearchSpace(model, SHAPE, "flops=0.1", streams="last")
    assert not hard.stream_pins
    cap = {k: hard.bounds[k][1] for k in ("layer2.0.conv2", "layer3.0.conv2")}
    assert all(0.0 < c < 0.5 for c in cap.values()), cap
    inner = {k: hi for k, (_, hi) in hard.bounds.items() if k not in cap}
    assert set(inner.values()) == {0.9}
    assert hard.feasible(hard.smallest_policy())
    # the cap is the least that meets the budget: a stream channel fewer cut and it does not
    less = {**hard.smallest_policy(), **{k: hard.rate_for_kept(k, hard.kept(cap)[k] + 1) for k in cap}}
    assert not hard.feasible(less)
    assert SearchSpace(model, SHAPE, "flops=0.1").bounds["layer2.0.conv2"] == (0.0, 0.9)


def test_a_space_rebuilt_from_its_arguments_has_the_same_bounds() -> None:
    """What each Ray evaluation actor does with the job's space."""
    model = _resnet20()
    for streams, target in [("last", "flops=0.1"), ("whole", "flops=0.3")]:
        space = SearchSpace(model, SHAPE, target, streams=streams)  # type: ignore[arg-type]
        args = _space_args(space)
        rebuilt = SearchSpace(model, SHAPE, args.pop("target"), **args)
        assert (rebuilt.keys, rebuilt.bounds, rebuilt.pinned) == (space.keys, space.bounds, space.pinned)


def test_streams_is_checked_in_the_job_config() -> None:
    base = {"model": {"zoo": "resnet20"}, "data": {"name": "digits"}, "target": "flops=0.5"}
    spec = {**base, "strategy": {"name": "uniform"}}
    assert JobConfig.model_validate(spec).space.streams == "search"
    assert JobConfig.model_validate({**spec, "space": {"streams": "last"}}).space.streams == "last"
    with pytest.raises(ValueError, match=r"space\.streams"):
        JobConfig.model_validate({**spec, "space": {"streams": "sometimes"}})


def test_a_job_with_whole_streams_returns_them_whole(tmp_path: Path) -> None:
    from workers.pipeline import run_pipeline

    config = {
        "model": {"zoo": "resnet20"},
        "data": {"name": "digits"},
        "target": "flops=0.4",
        "strategy": {"name": "eagleeye", "options": {"n_samples": 3, "top_k": 1, "finetune_steps": 2}},
        "space": {"streams": "whole"},
        "train": {"epochs": 1},
        "finetune": {"max_steps": 10},
        "onnx": False,
    }
    summary = run_pipeline(config, tmp_path / "job", device="cpu")
    kept = summary["kept_channels"]
    model = _resnet20()
    graph = DependencyGraph(model, torch.randn(1, *SHAPE))
    for g in graph.groups:
        if g.stream:
            assert kept[g.key] == g.channels, g.key
    assert sum(kept[g.key] < g.channels for g in graph.groups) >= 5
    assert summary["flops_after"] <= 0.4 * summary["flops_before"]
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    assert report["space"]["streams"] == "whole"
    assert report["config"]["space"]["streams"] == "whole"
