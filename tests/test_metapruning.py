"""MetaPruning: the PruningNet generates cropped weights whose network equals the physically
cut one; its training is a checkpointable phase; evolutionary search through the core's
`run_search` proposes only encodings that meet the target and resumes exactly."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from pruning import build_model
from pruning.bn import recalibrate_bn
from pruning.criteria import Criterion
from pruning.cut import prune
from pruning.data import calibration_batches
from search.base import SearchError
from search.evaluators import EvalContext, make_evaluator
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace
from search.strategies.metapruning import GeneratedNetwork, PruningNet, random_kept

SHAPE = (1, 16, 16)


class FirstChannels(Criterion):
    """Keeps the first channels of every group: MetaPruning's top-left crop."""

    name = "first-k"

    def scores(self, model: nn.Module, graph, group) -> torch.Tensor:
        return -torch.arange(group.channels, dtype=torch.float32)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["resnet20", "convnet"])
def test_generated_weights_have_the_cut_shapes_and_outputs(name: str, digits) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1, input_size=16).eval()
    space = SearchSpace(model, SHAPE, "flops=0.5")
    net = PruningNet(model, space.groups, hidden=8)
    calib = calibration_batches(digits.train, 1, 32, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        kept = random_kept(space, gen)
        params = net.generate(kept)
        cut = prune(model, kept, FirstChannels(), input_shape=SHAPE)
        cut_params = dict(cut.named_parameters())
        with torch.no_grad():
            for key, tensor in params.items():
                small = cut_params[key]
                assert tensor.shape[0] >= small.shape[0]
                crop = tensor[tuple(slice(0, s) for s in small.shape)]
                assert crop.shape == small.shape
                rest = tensor.clone()
                rest[tuple(slice(0, s) for s in small.shape)] = 0
                if key.endswith("weight") and tensor.dim() > 1:
                    assert rest.abs().sum() == 0, key  # everything outside the crop is cut away
                small.copy_(crop)
        generated = GeneratedNetwork(net, kept)
        recalibrate_bn(generated, calib)
        recalibrate_bn(cut, calib)
        x = calib[0][0]
        with torch.no_grad():
            assert torch.allclose(generated(x), cut(x), atol=1e-4)


def _setup(model, digits, **options):
    calib = calibration_batches(digits.train, 1, 64, seed=0)
    space = SearchSpace(model, SHAPE, "flops=0.5", calibration=calib)
    ctx = EvalContext(model, digits, SHAPE, calibration=calib, space=space, val_batches=1)
    opts = dict(train_steps=4, train_chunk=2, population=4, generations=2, topk=2, **options)
    return (
        space,
        make_evaluator("pruningnet", ctx, hidden=8, batch_size=16),
        make_strategy("metapruning", space, seed=0, **opts),
    )


def test_evolution_meets_target_and_resumes_exactly(digits) -> None:
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    space, ev, strategy = _setup(model, digits)
    events: list[dict] = []
    reference = run_search(strategy, ev, on_event=events.append)
    phases = [r.phase for r in reference.results]
    assert phases == ["evolution"] * 8  # PruningNet training is work, not candidates
    work = [e for e in events if e["type"] == "work"]
    assert [(e["phase"], e["train_to"], e["pruningnet_steps"]) for e in work] == [("train", 2, 2), ("train", 4, 4)]
    assert all(e["train_loss"] > 0 and 0 <= e["score"] <= 1 for e in work)
    assert [e for e in reference.events if e["type"] == "work"] == work
    assert all(r in reference.results for r in reference.pareto)
    evo = [r for r in reference.results if r.phase == "evolution"]
    assert all(space.feasible(r.policy) and r.flops <= space.budget for r in evo)
    # the band: every encoding uses at least 90% of the budget (random draws alone mostly do not)
    assert strategy.floor == pytest.approx(0.9 * space.budget)
    assert all(strategy.costs.resource(r.meta["encoding"]) >= strategy.floor for r in evo)
    assert reference.best in evo
    assert reference.best.score == max(r.score for r in evo)
    assert len({tuple(sorted(r.meta["encoding"].items())) for r in evo}) == len(evo)

    # stop after the first training chunk (no candidate yet) and within a generation, resume in a
    # fresh process's shoes: the state holds the steps trained, the evaluator reloads its PruningNet
    for mid_training in (True, False):
        seen: list[dict] = []
        stop = (
            {"should_stop": lambda log=seen: any(e["type"] == "work" for e in log)}
            if mid_training
            else {"max_candidates": 3}
        )
        _, ev1, first = _setup(model, digits)
        partial = run_search(first, ev1, on_event=seen.append, **stop)
        assert partial.stopped
        assert first.trained == (2 if mid_training else 4)
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        _, ev2, second = _setup(model, digits)
        second.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True), partial.results)
        resumed = run_search(second, ev2, previous=partial.results).results
        assert [r.policy for r in resumed] == [r.policy for r in reference.results]
        assert [r.score for r in resumed] == [r.score for r in reference.results]


def test_budget_band_is_optional_and_checked(digits) -> None:
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    space, _, paper = _setup(model, digits, min_fraction=0.0)
    assert paper.floor == 0.0
    draws = [paper.costs.resource(paper._random()) for _ in range(30)]
    assert min(draws) < 0.9 * space.budget  # the paper's rule alone lets most draws fall far under
    with pytest.raises(SearchError, match="min_fraction"):
        make_strategy("metapruning", space, seed=0, min_fraction=1.5)
