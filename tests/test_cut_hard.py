"""Cuts the dependency graph alone gets wrong: grouped convolutions (cut in whole groups),
split/chunk blocks (each part loses the same), channel shuffles and ops the cut breaks (kept
whole with a warning naming the group), and the check every cut passes before it is returned."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pruning import channel_groups, prune
from pruning.cut import check_cut, cut_model
from pruning.errors import CutError, PinnedGroupWarning
from search.space import SearchSpace

SHAPE = (3, 16, 16)


def cbr(i: int, o: int, k: int = 1, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class GroupedBlock(nn.Module):
    """A RegNet/ResNeXt bottleneck: 1x1, 3x3 grouped (group width `gw`), 1x1, residual add."""

    def __init__(self, c: int = 16, w: int = 32, gw: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c, 3)
        self.a = cbr(c, w)
        self.b = cbr(w, w, 3, 1, w // gw)
        self.c = nn.Sequential(nn.Conv2d(w, c, 1, bias=False), nn.BatchNorm2d(c))
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.c(self.b(self.a(x))))
        return self.fc(x.mean((2, 3)))


class ChunkBlock(nn.Module):
    """Split the stem's channels in two with torch.chunk and convolve each half."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.left = cbr(8, 8, 3)
        self.right = cbr(8, 8, 3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.chunk(self.stem(x), 2, dim=1)
        return self.fc(torch.cat([self.left(p), self.right(q)], 1).mean((2, 3)))


class FixedSplit(ChunkBlock):
    """The same block with split sizes written into the code: no cut of the stem can run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.stem(x), [8, 8], dim=1)
        return self.fc(torch.cat([self.left(p), self.right(q)], 1).mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNetV2 shuffle."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            cbr(h, h),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            cbr(h, h),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


class Shuffle(nn.Module):
    """A ShuffleNetV2 stage: the stream's channels pass through chunk, concat and shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(self.stem(x)).mean((2, 3)))


class LeNet(nn.Module):
    """A flatten written with the feature size in the code (`view(-1, 8 * 4 * 4)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = cbr(3, 6, 5, 2)
        self.conv2 = cbr(6, 8, 3, 2)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.conv2(self.conv1(x)).view(-1, 8 * 4 * 4))))


def randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so that a wrong channel mapping shows in the output."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def zero_channels(model: nn.Module, group_key: str, idxs: list[int]) -> None:
    """Make channels `idxs` of a group exactly zero after its members' BNs (filters, BN affine
    and running mean), so removing them cannot change the output."""
    modules = dict(model.named_modules())
    group = next(g for g in channel_groups(model, SHAPE) if g.key == group_key)
    for name in group.members:
        modules[name].weight.data[idxs] = 0
    for name in group.bns:
        bn = modules[name]
        bn.weight.data[idxs] = 0
        bn.bias.data[idxs] = 0
        bn.running_mean[idxs] = 0


def pinned_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PinnedGroupWarning)]


# ---- grouped convolutions -------------------------------------------------------------------
@pytest.mark.parametrize("gw", [8, 16])
@pytest.mark.parametrize("criterion", ["l1", "fpgm"])
def test_grouped_conv_is_cut_in_whole_groups(gw: int, criterion: str) -> None:
    model = randomise_bn(GroupedBlock(gw=gw))
    group = next(g for g in channel_groups(model, SHAPE) if "b.0" in g.members)
    assert group.members == ["a.0", "b.0"]
    assert group.unit == gw
    assert group.pinned is None
    pruned = prune(model, 0.5, criterion, input_shape=SHAPE)
    conv = pruned.b[0]
    assert conv.in_channels == conv.out_channels == 16
    assert conv.in_channels % gw == 0
    assert conv.groups == 16 // gw
    assert conv.weight.shape == (16, gw, 3, 3)
    assert pruned.a[0].out_channels == 16
    assert pruned.c[0].in_channels == 16
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_grouped_cut_removes_exactly_the_zeroed_groups() -> None:
    """Zero conv groups 1 and 3 of a width-8 block: cutting half the channels removes those
    groups (a's filters and b's matching input and output channels) and the output is unchanged."""
    model = randomise_bn(GroupedBlock(gw=8))
    gone = [i for g in (1, 3) for i in range(8 * g, 8 * g + 8)]
    zero_channels(model, "a.0", gone)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        before = model(x)
    pruned = prune(model, {"a.0": 0.5}, "l1", input_shape=SHAPE)
    assert pruned.b[0].groups == 2
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-4)


def test_grouped_rates_round_to_whole_groups() -> None:
    model = GroupedBlock(gw=8).eval()
    kept = {g.key: g.channels for g in channel_groups(prune(model, 0.3, "l1", input_shape=SHAPE), SHAPE)}
    assert kept["a.0"] % 8 == 0
    assert kept["a.0"] < 32


# ---- split / chunk --------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["l1", "fpgm"])
def test_chunk_parts_lose_the_same_number(criterion: str) -> None:
    """The stem's first half scores lowest by far, so a plain lowest-first cut would take all
    four channels from the left half and break the chunk."""
    model = randomise_bn(ChunkBlock())
    with torch.no_grad():
        model.stem[0].weight[:8] *= 1e-3
        model.stem[0].weight[:8] += torch.arange(8).view(8, 1, 1, 1) * 1e-4  # distinct, for FPGM
    group = next(g for g in channel_groups(model, SHAPE) if g.key == "stem.0")
    assert group.parts == [list(range(8)), list(range(8, 16))]
    pruned = prune(model, {"stem.0": 0.25}, criterion, input_shape=SHAPE)
    assert pruned.left[0].in_channels == pruned.right[0].in_channels == 6
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_chunk_cut_removes_exactly_the_zeroed_channels() -> None:
    """Each half's consumer loses the channels its own half lost (the dependency graph alone
    maps a chunk's halves to its consumers in traversal order, here swapped), and channels
    behind the concat map to the right rows of the linear layer."""
    model = randomise_bn(ChunkBlock())
    zero_channels(model, "stem.0", [1, 2, 9, 12])
    zero_channels(model, "left.0", [0, 5])
    zero_channels(model, "right.0", [3, 4])
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        before = model(x)
    pruned = prune(model, {"stem.0": 0.25, "left.0": 0.25, "right.0": 0.25}, "l1", input_shape=SHAPE)
    assert pruned.fc.in_features == 12
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-4)


# ---- groups that cannot be cut: pinned whole, with a warning ---------------------------------
def test_channel_shuffle_groups_are_pinned_and_the_rest_is_cut() -> None:
    model = randomise_bn(Shuffle())
    groups = {g.key: g for g in channel_groups(model, SHAPE)}
    shuffled = [g for g in groups.values() if g.pinned]
    assert shuffled
    assert all("shuffle" in g.pinned for g in shuffled if g.pinned)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = cut_model(model, 0.5, "l1", input_shape=SHAPE)
    messages = pinned_warnings(record)
    assert any(shuffled[0].key in m and "shuffle" in m for m in messages)
    assert out.model(torch.randn(2, *SHAPE)).shape == (2, 10)
    after = {g.key: g.channels for g in channel_groups(out.model, SHAPE)}
    for key, g in groups.items():  # pinned groups whole, the branches' inner groups halved
        assert after.get(key, g.channels) == (g.channels if g.pinned else g.channels // 2)
    assert any(not g.pinned for g in groups.values())


def test_a_cut_that_breaks_the_network_is_pinned_with_a_warning() -> None:
    """torch.split with sizes written in the code: the stem's cut cannot run; it is kept whole,
    the warning names it, and the other groups are still cut."""
    model = randomise_bn(FixedSplit())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = cut_model(model, 0.5, "l1", input_shape=SHAPE)
    assert set(out.pinned) == {"stem.0"}
    assert any("stem.0" in m for m in pinned_warnings(record))
    assert out.model.stem[0].out_channels == 16
    assert out.model.left[0].out_channels == 4
    assert out.model(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_a_failed_check_names_the_group_when_not_pinning() -> None:
    model = FixedSplit().eval()
    with pytest.raises(CutError, match=r"stem\.0") as info:
        cut_model(model, 0.5, "l1", input_shape=SHAPE, pin_failures=False)
    assert info.value.group == "stem.0"
    assert info.value.layers == ["stem.0"]


def test_a_hard_coded_view_pins_its_group() -> None:
    model = LeNet().eval()
    with pytest.raises(CutError, match=r"conv2\.0") as info:
        cut_model(model, 0.5, "l1", input_shape=SHAPE, pin_failures=False)
    assert info.value.group == "conv2.0"
    out = cut_model(model, 0.5, "l1", input_shape=SHAPE)
    assert set(out.pinned) == {"conv2.0"}
    assert out.model.conv1[0].out_channels == 3
    assert out.model.fc1.out_features == 16
    assert out.model(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_the_check_catches_a_changed_output_shape() -> None:
    model = LeNet().eval()
    x = torch.zeros(1, *SHAPE)
    check_cut(model, x, {"output": (1, 10)}, "nothing")
    with pytest.raises(CutError, match=r"changed the output shape from \(1, 5\) to \(1, 10\)"):
        check_cut(model, x, {"output": (1, 5)}, "channel group x")


def test_inplace_cut_that_fails_is_an_error() -> None:
    with pytest.raises(CutError, match="fails its check"):
        prune(FixedSplit().eval(), 0.5, "l1", input_shape=SHAPE, inplace=True)


def test_search_space_pins_what_cannot_be_cut() -> None:
    """A search never proposes a pinned group: shuffled groups (the graph) and a split the
    trial cut breaks (the check) are kept whole, each with its reason."""
    space = SearchSpace(randomise_bn(FixedSplit()), SHAPE, "flops=0.7")
    assert set(space.engine_pins) == {"stem.0"}
    assert "breaks the network" in space.engine_pins["stem.0"]
    assert "stem.0" not in space.keys
    assert space.pinned["stem.0"] == 0.0
    assert space.kept(dict.fromkeys(space.keys, 0.5))["stem.0"] == 16
    shuffle = SearchSpace(randomise_bn(Shuffle()), SHAPE, "flops=0.8")
    assert shuffle.engine_pins
    assert all("shuffle" in why for why in shuffle.engine_pins.values())
    assert not set(shuffle.engine_pins) & set(shuffle.keys)
    described = {g["key"]: g for g in shuffle.describe()["groups"]}
    assert all(described[k]["pinned_reason"] == why for k, why in shuffle.engine_pins.items())


def test_a_space_traces_its_network_once_unless_the_trial_cut_fails(monkeypatch) -> None:
    """The trial cut is made on the space's own trace: one channel-graph trace for a network
    whose trial cut passes; a failed one (the split) is cut again, group by group, and pins."""
    import pruning.cost
    import pruning.cut
    from pruning.graph import DependencyGraph

    made: list[str] = []

    class Counted(DependencyGraph):
        def __init__(self, model: nn.Module, *args, **kwargs) -> None:
            made.append(type(model).__name__)
            super().__init__(model, *args, **kwargs)

    monkeypatch.setattr(pruning.cost, "DependencyGraph", Counted)
    monkeypatch.setattr(pruning.cut, "DependencyGraph", Counted)
    space = SearchSpace(randomise_bn(Shuffle()), SHAPE, "flops=0.8")
    assert made == ["Shuffle"]
    assert space.engine_pins
    assert all("shuffle" in why for why in space.engine_pins.values())
    made.clear()
    split = SearchSpace(randomise_bn(FixedSplit()), SHAPE, "flops=0.7")
    assert len(made) > 1  # the failed trial cut was made again to find the group
    assert set(split.engine_pins) == {"stem.0"}


def test_a_job_reports_the_groups_it_keeps_whole(tmp_path) -> None:
    """A job on a user's `.pt2` with a channel shuffle: each pinned group is a warning event
    naming it and its layers, and the summary lists them; the rest is cut."""
    from pruning.export import export_program
    from workers.pipeline import run_pipeline
    from workers.sink import FileSink

    program = export_program(randomise_bn(Shuffle()), tmp_path / "shuffle.pt2", SHAPE)
    sink = FileSink(tmp_path / "out")
    config = {
        "model": {"program": str(program)},
        "data": {"name": "synthetic", "input_size": SHAPE[-1]},
        "target": {"flops": 0.8},
        "strategy": {"name": "uniform"},
        "finetune": {"max_steps": 0},
        "search": {"calibration_batches": 1, "val_batches": 1},
        "onnx": False,
    }
    summary = run_pipeline(config, tmp_path / "out", sink)
    pinned = summary["pinned_groups"]
    assert pinned
    assert all("shuffle" in why for why in pinned.values())
    warnings_ = [e for e in sink.events if e["kind"] == "warning" and e["data"].get("group") in pinned]
    assert {e["data"]["group"] for e in warnings_} == set(pinned)
    assert all(e["data"]["layers"] and e["data"]["group"] in e["message"] for e in warnings_)
    assert summary["flops_after"] <= 0.8 * summary["flops_before"]
    assert all(summary["kept_channels"][k] == summary["original_channels"][k] for k in pinned)


def test_the_cli_says_which_groups_it_keeps_whole(tmp_path) -> None:
    """`secateurs prune` on such a program: one warning line per pinned group, and it still cuts."""
    import subprocess
    import sys
    from pathlib import Path

    from pruning.export import export_program

    program = export_program(randomise_bn(Shuffle()), tmp_path / "shuffle.pt2", SHAPE)
    secateurs = str(Path(sys.executable).parent / "secateurs")
    args = ["prune", "--model", str(program), "--data", "synthetic", "--rate", "0.5", "--out", str(tmp_path / "o")]
    done = subprocess.run([secateurs, *args], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [
        line for line in done.stderr.replace("\r", "\n").splitlines() if "secateurs: warning: channel group" in line
    ]
    assert any("stem.0" in line and "channel shuffle" in line for line in lines)
    assert "params" in done.stdout
