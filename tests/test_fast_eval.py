"""One trace per job: evaluators cut candidates from the search space's cached trace by index
selection, and a candidate scores what a freshly cut network (`pruning.cut.prune`: copy,
re-trace, cut) scores with the same evaluator; each result splits its time by step."""

from __future__ import annotations

import pytest
import torch

from pruning import build_model, prune
from pruning.data import calibration_batches
from search.evaluators import EvalContext, make_evaluator
from search.space import SearchSpace

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def trained(resnet20_digits):
    """The session's resnet20 trained for 1 epoch on digits (tests/conftest.py)."""
    return resnet20_digits


@pytest.fixture(scope="module")
def calib(digits):
    return calibration_batches(digits.train, 2, 64, seed=0)


CASES = [
    ("adaptive-bn", {}, "l1", {"cut", "count", "bn", "validate"}),
    ("finetune", {"steps": 5, "batch_size": 32}, "l1", {"cut", "count", "bn", "train", "validate"}),
    ("reconstruct", {"n_points": 4}, "l1", {"cut", "count", "reconstruct", "validate"}),
    ("adaptive-bn", {}, "activation-mean", {"cut", "count", "bn", "validate"}),
]


@pytest.mark.parametrize("name, options, criterion, steps", CASES)
def test_candidate_scores_what_a_freshly_cut_network_scores(
    trained, digits, calib, name: str, options: dict, criterion: str, steps: set[str]
) -> None:
    space = SearchSpace(trained, SHAPE, "flops=0.5", calibration=calib, criterion=criterion)
    with_space = EvalContext(trained, digits, SHAPE, criterion, calibration=calib, space=space)
    fast = make_evaluator(name, with_space, **options)
    fresh = make_evaluator(name, EvalContext(trained, digits, SHAPE, criterion, calibration=calib), **options)
    for rate in (0.3, 0.6):
        policy = dict.fromkeys(space.keys, rate)
        got = fast.evaluate(policy)
        want = fresh.evaluate(space.kept(policy))  # kept counts: prune() without the space
        assert got.score == pytest.approx(want.score, abs=1e-5)
        assert (got.flops, got.params, got.memory_bytes) == (want.flops, want.params, want.memory_bytes)
        timing = got.meta["timing"]
        assert set(timing) == steps
        assert all(v >= 0 for v in timing.values())
        assert sum(timing.values()) <= got.wall_seconds


def test_space_cut_equals_prune_and_follows_changed_weights(trained, calib) -> None:
    """The cached channel scores are recomputed when the weights change in place."""
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=16)
    model.load_state_dict(trained.state_dict())
    model.eval()
    space = SearchSpace(model, SHAPE, "flops=0.5")
    policy = dict.fromkeys(space.keys, 0.5)
    x = torch.randn(4, *SHAPE)

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    first = space.cut(policy)
    assert same(first, prune(model, space.kept(policy), "l1", input_shape=SHAPE))
    with torch.no_grad():  # reverse the L1 ranking of one group's filters
        w = model.get_parameter("layer2.0.conv1.weight")
        w.mul_(1.0 / w.abs().sum((1, 2, 3), keepdim=True).clamp_min(1e-6) ** 2)
    second, again = space.cut(policy), prune(model, space.kept(policy), "l1", input_shape=SHAPE)
    assert same(second, again)
    assert not same(first, second)
    with torch.no_grad():
        assert torch.equal(second(x), again(x))
