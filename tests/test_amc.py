"""AMC: the environment's state and clamp, the DDPG agent, least-squares reconstruction, and
the strategy through the core's `run_search` (budget met, episode count, exact resume)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning import build_model
from pruning.cut import prune
from pruning.data import calibration_batches
from pruning.measure import count_flops, count_params
from pruning.train import TrainConfig, evaluate, train
from search.evaluators import EvalContext, make_evaluator
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace
from search.strategies.amc import DDPG, DDPGConfig, PruningEnv, prune_and_reconstruct
from search.strategies.amc.env import STATE_FEATURES, SpaceCosts

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def trained_resnet(resnet20_digits):
    """ResNet-20 trained briefly on digits (enough for accuracy to mean something): the
    session's 1-epoch network (tests/conftest.py)."""
    return resnet20_digits


@pytest.fixture(scope="module")
def trained_convnet(digits):
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    train(model, digits.train, TrainConfig(epochs=1, lr=0.05, seed=0), device="cpu")
    return model.eval()


def test_cost_model_matches_engine_counters() -> None:
    model = build_model("resnet20", num_classes=10, in_channels=1).eval()
    space = SearchSpace(model, SHAPE, "flops=0.5")
    costs = SpaceCosts(space).model
    rng = np.random.default_rng(0)
    policy = {k: float(rng.uniform(0, 0.8)) for k in space.keys}
    kept = space.kept(policy)
    cut = prune(model, kept, input_shape=SHAPE)
    assert costs.flops(kept) == count_flops(cut, SHAPE)
    assert costs.params(kept) == count_params(cut)


@pytest.mark.parametrize("target", ["flops=0.5", "params=0.4"])
def test_env_state_in_unit_box_and_clamp_keeps_target(target: str) -> None:
    model = build_model("resnet20", num_classes=10, in_channels=1).eval()
    space = SearchSpace(model, SHAPE, target)
    env = PruningEnv(space)
    rng = np.random.default_rng(1)
    for actions in ("zeros", "ones", "random", "random"):
        obs, _ = env.reset()
        assert obs[STATE_FEATURES.index("index")] == 0.0
        assert obs[STATE_FEATURES.index("reduced")] == 0.0
        assert obs[STATE_FEATURES.index("previous")] == 0.0
        done, steps = False, 0
        while not done:
            assert env.observation_space.contains(obs), obs
            a = {"zeros": 0.0, "ones": 1.0}.get(actions, float(rng.uniform()))
            lo, hi = env.bounds()
            obs, _, done, _, info = env.step(np.array([a], dtype=np.float32))
            assert lo <= info["rate"] <= hi <= space.max_rate
            steps += 1
        assert steps == len(space.keys)
        policy = info["policy"]
        kept = space.kept(policy)
        assert min(kept.values()) >= 1
        cut = prune(model, kept, input_shape=SHAPE)
        measured = count_flops(cut, SHAPE) if target.startswith("flops") else count_params(cut)
        assert measured <= space.budget
        if actions == "zeros":  # the clamp cuts only what the target needs: within 1% of it
            assert measured >= 0.99 * space.budget


def test_ddpg_learns_a_one_dimensional_problem() -> None:
    """One-step episodes, reward -(a - 0.3)^2: the greedy action must move to 0.3."""
    agent = DDPG(2, 1, DDPGConfig(batch_size=32, buffer_size=500, init_delta=0.3, delta_decay=0.98), seed=0)
    state = torch.tensor([0.5, 1.0])
    before = float(agent.act(state, explore=False))
    for episode in range(300):
        warm = episode < 30
        agent.set_noise(episode - 30)
        a = agent.random_action() if warm else agent.act(state)
        agent.observe(state, a, -float((a - 0.3) ** 2), state, True)
        if not warm:
            agent.update()
    after = float(agent.act(state, explore=False))
    assert abs(after - 0.3) < 0.05, (before, after)
    assert abs(after - 0.3) < abs(before - 0.3)
    assert agent.delta < 0.3


def test_ddpg_state_round_trip_is_exact() -> None:
    def run(agent: DDPG, n: int) -> list[float]:
        out = []
        for _ in range(n):
            s = torch.rand(3, generator=agent.generator)
            a = agent.act(s)
            agent.observe(s, a, float(-a.sum()), s, True)
            agent.update()
            out.append(float(a))
        return out

    cfg = DDPGConfig(hidden1=16, hidden2=16, batch_size=8, buffer_size=50)
    a = DDPG(3, 1, cfg, seed=3)
    run(a, 10)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = DDPG(3, 1, cfg, seed=99)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert run(a, 10) == run(b, 10)


def test_reconstruction_lowers_output_error(trained_resnet, digits) -> None:
    model = trained_resnet
    calib = calibration_batches(digits.train, 2, 64, seed=0)
    space = SearchSpace(model, SHAPE, "flops=0.5")
    kept = space.kept(dict.fromkeys(space.keys, 0.5))
    rebuilt, fits = prune_and_reconstruct(model, kept, "l1", SHAPE, calib)
    assert fits
    assert all(f.error_after <= f.error_before + 1e-9 for f in fits)
    assert sum(f.error_after for f in fits) < 0.5 * sum(f.error_before for f in fits)
    plain = prune(model, kept, "l1", input_shape=SHAPE)
    held_out = torch.cat([x for x, _ in calibration_batches(digits.val, 2, 64, seed=1)])
    with torch.no_grad():
        ref = model(held_out)
        err_plain = (plain(held_out) - ref).pow(2).mean()
        err_rebuilt = (rebuilt(held_out) - ref).pow(2).mean()
    assert err_rebuilt < err_plain
    assert evaluate(rebuilt, digits.val) > evaluate(plain, digits.val)


def _search(model, digits, ev_name: str, target: str = "flops=0.5", **options):
    calib = calibration_batches(digits.train, 1, 64, seed=0)
    space = SearchSpace(model, SHAPE, target, calibration=calib)
    ctx = EvalContext(model, digits, SHAPE, calibration=calib, space=space, val_batches=1)
    return space, make_evaluator(ev_name, ctx), make_strategy("amc", space, seed=0, **options)


def test_amc_search_meets_budget_every_episode(trained_resnet, digits, tmp_path) -> None:
    space, ev, strategy = _search(trained_resnet, digits, "reconstruct", episodes=4, warmup=2)
    events = []
    outcome = run_search(strategy, ev, batch_size=2, on_event=events.append)
    assert len(outcome.results) == 4
    assert strategy.done
    assert all(r.flops <= space.budget for r in outcome.results)
    assert [r.meta["warmup"] for r in outcome.results] == [True, True, False, False]
    assert outcome.best is not None
    assert outcome.best.score == max(r.score for r in outcome.results)
    assert "reward" in strategy.progress()
    assert "noise" in events[-1]["phase"]
    files = strategy.write_artifacts(tmp_path)
    assert json.loads((tmp_path / "amc_rewards.json").read_text())["rewards"] == strategy.rewards
    assert Path(files["amc_rewards_plot"]).stat().st_size > 0


def test_amc_resumes_exactly(trained_convnet, digits) -> None:
    opts = {"episodes": 8, "warmup": 3, "hidden": 32, "batch_size": 8, "evaluator": "plain"}
    _, ev, full = _search(trained_convnet, digits, "plain", **opts)
    reference = run_search(full, ev).results

    _, ev, first = _search(trained_convnet, digits, "plain", **opts)
    partial = run_search(first, ev, max_candidates=5)
    assert partial.stopped
    assert len(partial.results) == 5
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    _, ev, second = _search(trained_convnet, digits, "plain", **opts)
    second.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True), partial.results)
    resumed = run_search(second, ev, previous=partial.results).results
    assert [r.policy for r in resumed] == [r.policy for r in reference]
    assert [r.score for r in resumed] == [r.score for r in reference]


def test_rllib_agent_runs_the_same_env(trained_convnet, digits) -> None:
    space, ev, strategy = _search(trained_convnet, digits, "plain", episodes=3, agent="rllib-ppo", evaluator="plain")
    try:
        outcome = run_search(strategy, ev)
    finally:
        strategy.close()
    assert len(outcome.results) == 3
    assert all(r.flops <= space.budget for r in outcome.results)


def _module_weights(strategy) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.array(v)) for k, v in strategy.rllib.algo.get_module().get_state().items()}


@pytest.mark.parametrize(
    "agent,rllib_options", [("rllib-ppo", {"episodes_per_iteration": 1}), ("rllib-sac", {"warmup": 1, "batch_size": 8})]
)
def test_rllib_agent_resumes_from_learned_weights(trained_convnet, digits, agent, rllib_options) -> None:
    """A stopped RLlib search restarts from the learner's trained weights, not a fresh agent."""
    opts = {"episodes": 5, "agent": agent, "evaluator": "plain", "rllib_options": rllib_options}
    _, ev, first = _search(trained_convnet, digits, "plain", **opts)
    try:
        initial = _module_weights(first) if first._rllib() else None
        partial = run_search(first, ev, max_candidates=3)
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
    finally:
        first.close()
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    saved = state["extra"]["rllib"]["learner"]["rl_module"]["default_policy"]
    assert any(not torch.equal(saved[k], initial[k]) for k in initial)  # PPO trained on 3 episodes

    space, ev, second = _search(trained_convnet, digits, "plain", **opts)
    second.load_state_dict(state, partial.results)
    try:
        restored = _module_weights(second) if second._rllib() else None
        assert restored
        assert all(torch.equal(restored[k], saved[k]) for k in restored)  # the acting (inference) module
        resumed = run_search(second, ev, previous=partial.results)
    finally:
        second.close()
    assert len(resumed.results) == 5
    assert second.told == 5
    assert all(r.flops <= space.budget for r in resumed.results)
