"""Importance criteria on cases whose right answer is known, and every criterion on every zoo model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning import DependencyGraph, build_model, prune
from pruning.criteria import CRITERIA, get_criterion, slimming_penalty
from pruning.cut import global_policy
from pruning.data import calibration_batches
from pruning.errors import PruningError, UnsupportedModelError
from pruning.measure import count_flops, count_params

SHAPE = (1, 16, 16)
ZOO = ["convnet", "resnet18", "resnet20", "resnet56", "vgg16_bn", "mobilenetv2"]
NEW = ["fpgm", "slimming", "apoz", "activation-mean", "activation-std", "hrank"]

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """A 1x1 conv + BN + ReLU whose 6 channels the tests set by hand, then a head."""

    def __init__(self, cin: int = 8, c: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def _scores(model: nn.Module, name: str, batches=None, cin: int = 8) -> torch.Tensor:
    model.eval()
    graph = DependencyGraph(model, torch.zeros(1, cin, 8, 8))
    crit = get_criterion(name)
    crit.prepare(model, graph, batches)
    return crit.scores(model, graph, graph.by_key["conv"])


def _batches(cin: int = 8, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, cin, 8, 8, generator=g), torch.zeros(16, dtype=torch.long)) for _ in range(n)]


def test_fpgm_cuts_a_duplicated_filter_first() -> None:
    torch.manual_seed(0)
    model = Tiny()
    w = torch.zeros(6, 8)
    w[torch.arange(5), torch.arange(5)] = 1.0  # five orthogonal filters of equal norm
    w[5] = w[2]  # filter 5 duplicates filter 2
    model.conv.weight.data = w.view(6, 8, 1, 1)
    scores = _scores(model, "fpgm")
    assert set(torch.argsort(scores)[:2].tolist()) == {2, 5}
    l1 = _scores(model, "l1")
    assert torch.allclose(l1, l1[0].expand_as(l1))  # norms tie: only FPGM sees the redundancy
    pruned = prune(model, {"conv": 5}, "fpgm", input_shape=(8, 8, 8))
    rows = pruned.conv.weight.detach().flatten(1)
    assert len(rows) == 5
    assert torch.cdist(rows, rows).add(torch.eye(5)).min() > 0.5  # all distinct


def test_slimming_cuts_a_zero_gamma_first_and_penalty_is_l1_on_gammas() -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.bn.weight.data = torch.tensor([0.9, 0.5, 1.2, 0.0, 0.7, 1.1])
    assert int(torch.argmin(_scores(model, "slimming"))) == 3
    pruned = prune(model, {"conv": 5}, "slimming", input_shape=(8, 8, 8))
    assert bool((pruned.bn.weight != 0).all())

    penalty = slimming_penalty(1e-3)
    loss = penalty(model)
    assert float(loss.detach()) == pytest.approx(1e-3 * float(model.bn.weight.detach().abs().sum()))
    loss.backward()
    torch.testing.assert_close(model.bn.weight.grad, 1e-3 * torch.sign(model.bn.weight.detach()))


def test_apoz_scores_an_always_zero_channel_zero() -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.bn.bias.data[1] = -100.0  # channel 1 is negative before ReLU on every input
    scores = _scores(model, "apoz", _batches())
    assert float(scores[1]) == 0.0  # APoZ = 1, importance = 1 - APoZ
    assert bool((scores[torch.arange(6) != 1] > 0.2).all())
    pruned = prune(model, {"conv": 5}, "apoz", input_shape=(8, 8, 8), calibration=_batches())
    assert float(pruned.bn.bias.detach().min()) > -50  # the dead channel is the one that went


def test_activation_mean_and_std_cut_the_right_channels() -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.conv.weight.data[2] = 0.0
    model.bn.bias.data[2] = 3.0  # channel 2: a constant 3 (high mean, zero spread)
    model.conv.weight.data[4] *= 0.01  # channel 4: tiny activations (low mean, low spread)
    mean = _scores(model, "activation-mean", _batches())
    std = _scores(model, "activation-std", _batches())
    assert int(torch.argmin(mean)) == 4
    assert int(torch.argmin(std)) == 2
    assert float(std[2]) == pytest.approx(0.0, abs=1e-6)
    assert float(mean[2]) == pytest.approx(3.0, rel=1e-5)


def test_hrank_cuts_the_low_rank_feature_map_first() -> None:
    torch.manual_seed(0)
    model = Tiny(cin=2)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        u, v = torch.rand(8, 8, 1, generator=g) + 0.1, torch.rand(8, 1, 8, generator=g) + 0.1
        x = torch.stack([u @ v, torch.randn(8, 8, 8, generator=g)], 1)  # channel 0 rank 1, channel 1 full rank
        batches.append((x, torch.zeros(8, dtype=torch.long)))
    w = torch.randn(6, 2)
    w[:, 1] = w[:, 1].abs() + 0.5
    w[0] = torch.tensor([1.0, 0.0])  # filter 0 passes the rank-1 map through
    model.conv.weight.data = w.view(6, 2, 1, 1)
    scores = _scores(model, "hrank", batches, cin=2)
    assert int(torch.argmin(scores)) == 0
    assert float(scores[0]) == pytest.approx(1.0)
    assert bool((scores[1:] > 2).all())


def test_data_dependent_criteria_need_calibration() -> None:
    model = build_model("convnet", in_channels=1)
    for name in ["apoz", "activation-mean", "activation-std", "hrank"]:
        with pytest.raises(PruningError, match="calibration"):
            prune(model, 0.5, name, input_shape=SHAPE)


def test_global_ranking_normalises_scores_across_layers(digits) -> None:
    """A layer whose activations are 1000x larger is still cut: scores are compared after
    per-group normalisation, not raw."""
    model = build_model("convnet", in_channels=1).eval()
    with torch.no_grad():
        model.features[8].weight.mul_(1000.0)
        model.features[8].bias.mul_(1000.0)
    cal = calibration_batches(digits.train, 2, 32)
    keep = global_policy(model, SHAPE, 0.5, "activation-mean", cal)
    assert keep["features.7"] < 64
    assert keep["features.0"] > 1
    total = sum(g.channels for g in DependencyGraph(model, torch.zeros(1, *SHAPE)).groups)
    assert sum(keep.values()) == pytest.approx(total * 0.5, abs=2)


def test_slimming_global_threshold_uses_raw_gammas() -> None:
    """Network Slimming compares |gamma| across layers as is: a layer whose gammas were driven
    to zero by sparsity training loses most of its channels under one global threshold."""
    torch.manual_seed(0)
    model = build_model("vgg16_bn", in_channels=1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
        model.features[1].weight.uniform_(0.005, 0.015)  # first BN (64 channels): gammas near zero
    keep = global_policy(model, SHAPE, 0.02, "slimming")
    assert keep["features.0"] <= 64 - int(0.9 * 64)


@pytest.fixture(scope="module")
def calibration(digits):
    return calibration_batches(digits.train, 1, 16, seed=0)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("criterion", NEW)
def test_every_criterion_prunes_every_zoo_model(name: str, criterion: str, calibration) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, input_size=16).eval()
    f0, p0 = count_flops(model, SHAPE), count_params(model)
    for rate in (0.3, 0.5, 0.7):
        pruned = prune(model, rate, criterion, input_shape=SHAPE, calibration=calibration)
        assert pruned(torch.randn(2, *SHAPE)).shape == (2, 10)
        f1, p1 = count_flops(pruned, SHAPE), count_params(pruned)
        assert f1 < f0 * (1 - rate) ** 2 * 1.25
        assert p1 < p0 * (1 - rate) ** 2 * 1.25


def test_registry_lists_every_survey_criterion() -> None:
    assert {"l1", "l2", *NEW} <= set(CRITERIA)


def test_a_model_the_graph_cannot_follow_is_a_clear_error() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * mask

    with pytest.raises(UnsupportedModelError, match="cannot trace"):
        prune(TwoInputs(), 0.5, "fpgm", input_shape=SHAPE)
