"""Every built-in strategy on a trained resnet20 (digits, 16 px): the target is met, the chosen
result is the best of its candidates, and a search stopped midway and rebuilt from its state
(through torch.save / weights-only load) ends exactly where an uninterrupted one does."""

from __future__ import annotations

import io

import pytest
import torch

from pruning import build_model
from pruning.data import calibration_batches
from search.evaluators import EvalContext, make_evaluator
from search.registry import make_strategy, strategy_class
from search.runner import run_search
from search.space import SearchSpace

SHAPE = (1, 16, 16)
OPTIONS = {
    "uniform": {},
    "global": {},
    "sensitivity": {"rates": [0.5, 0.9]},
    "eagleeye": {"n_samples": 5, "top_k": 2, "finetune_steps": 3},
    "netadapt": {"iterations": 2},
    "optuna": {"n_trials": 6, "n_startup_trials": 3},
}
EVAL_OPTIONS = {"finetune": {"steps": 3}}


@pytest.fixture(scope="module")
def setup(digits, resnet20_digits):
    """A resnet20 trained for 1 epoch (the session's, tests/conftest.py) and calibration batches."""
    model = resnet20_digits
    calib = calibration_batches(digits.train, 1, 64, seed=0)
    return model, calib


SPACES: dict[tuple, SearchSpace] = {}


def _search(model, digits, calib, name: str, target: str = "flops=0.5", seed: int = 0):
    """A fresh strategy and evaluator; the space (stateless but for its resource cache) is shared."""
    key = (id(model), target)
    if key not in SPACES:
        SPACES[key] = SearchSpace(model, SHAPE, target, calibration=calib)
    space = SPACES[key]
    ctx = EvalContext(model, digits, SHAPE, calibration=calib, space=space, val_batches=1, batch_size=128, seed=seed)
    ev_name = strategy_class(name).default_evaluator
    ev = make_evaluator(ev_name, ctx, **EVAL_OPTIONS.get(ev_name, {}))
    strategy = make_strategy(name, space, seed=seed, **OPTIONS[name])
    return space, ev, strategy


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_target_met_best_returned_and_resume_exact(setup, digits, name: str) -> None:
    model, calib = setup
    space, ev, strategy = _search(model, digits, calib, name, seed=1)
    full = run_search(strategy, ev)
    best = full.best
    assert best is not None
    assert strategy.done
    assert best.flops <= space.budget
    assert best.flops == space.resources(best.policy)["flops"]
    if name in ("uniform", "global", "eagleeye"):
        assert best.flops >= 0.95 * space.budget  # bisected onto the budget, not far below
    final_phase = [r for r in full.results if r.phase == best.phase]
    if name != "netadapt":  # NetAdapt returns its last iteration's winner, which meets the target
        assert best.score == max(r.score for r in final_phase)
    else:
        last = [r for r in full.results if r.meta["iteration"] == best.meta["iteration"]]
        assert best.score == max(r.score for r in last)

    # interrupted after about half the candidates, rebuilt from the saved state, resumed
    stop_at = max(1, len(full.results) // 2)
    _, ev2, first = _search(model, digits, calib, name, seed=1)
    saved: list[dict] = []
    part = run_search(first, ev2, checkpoint=saved.append, should_stop=lambda: len(saved) >= stop_at)
    if len(full.results) > 1:
        assert part.stopped
        assert not first.done
    _, ev3, resumed = _search(model, digits, calib, name, seed=1)
    resumed.load_state_dict(_roundtrip(saved[-1]), part.results)
    rest = run_search(resumed, ev3, previous=part.results)
    assert [r.policy for r in rest.results] == [r.policy for r in full.results]
    assert rest.best.policy == best.policy
    assert rest.best.score == pytest.approx(best.score)


@pytest.mark.parametrize("name", ["global", "eagleeye"])
def test_params_target_met(setup, digits, name: str) -> None:
    model, calib = setup
    space, ev, strategy = _search(model, digits, calib, name, target="params=0.4")
    best = run_search(strategy, ev).best
    assert best.params <= space.budget
    assert best.params >= 0.9 * space.budget


def test_same_seed_same_search_other_seed_differs(setup, digits) -> None:
    model, calib = setup
    runs = []
    for seed in (0, 0, 5):
        _, ev, s = _search(model, digits, calib, "eagleeye", seed=seed)
        runs.append([r.policy for r in run_search(s, ev).results])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("name", ["uniform", "eagleeye"])
def test_mobilenetv2_target_met(digits, name: str) -> None:
    model = build_model("mobilenetv2", num_classes=10, in_channels=1, input_size=16).eval()
    calib = calibration_batches(digits.train, 1, 32, seed=0)
    space = SearchSpace(model, SHAPE, "flops=0.5", calibration=calib)
    ctx = EvalContext(model, digits, SHAPE, calibration=calib, space=space, val_batches=1)
    ev = make_evaluator("adaptive-bn", ctx)
    opts = {"eagleeye": {"n_samples": 2, "top_k": 0}}.get(name, {})
    best = run_search(make_strategy(name, space, **opts), ev).best
    assert best.flops <= space.budget
    assert best.flops >= 0.9 * space.budget


def test_netadapt_default_schedule_lets_every_layer_propose() -> None:
    """With 5 fixed iterations a 70% cut asks each step for more than one ordinary group can
    give, so only the residual stage groups propose; the default schedule is small enough
    that every group makes a proposal in the first round."""
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=16).eval()
    space = SearchSpace(model, SHAPE, "flops=0.3")
    fixed = make_strategy("netadapt", space, seed=0, iterations=5)
    auto = make_strategy("netadapt", space, seed=0)
    assert len(fixed.ask(100)) < len(space.keys) // 2
    first = auto.ask(100)
    assert auto.iterations > 5
    assert len(first) == len(space.keys)
    assert all(p.meta["kept"] > auto.min_kept[p.meta["layer"]] for p in first)  # none forced to its bound
    with pytest.raises(Exception, match="step_share"):
        make_strategy("netadapt", space, seed=0, step_share=0)
