"""AMC's environment under an RLlib continuous-action algorithm (SAC or PPO), for teams that
use RLlib's tooling. Imported only when `AMCStrategy(agent="rllib-sac" | "rllib-ppo")` is
chosen: it is the one place under `search/` that touches Ray.

RLlib drives its own loop (`algo.train()` steps the environment and wants the reward at once),
while the search core is ask/tell. The bridge inverts it: RLlib trains on a background thread
with the environment in-process (`num_env_runners=0`); at an episode's last step the
environment hands the policy to `next_policy()` (the strategy's `ask`) and blocks until
`give_reward()` (the strategy's `tell`) returns the reward.

Resume: `snapshot()` takes the learner's RLModule weights and optimiser state (as torch tensors,
so the strategy's state stays `weights_only`-loadable) while the training thread is parked at an
episode's last step, and a new driver starts from them. Not kept: SAC's replay buffer, the
episodes PPO has sampled since its last update, and RLlib's sampling RNG, so a resumed RLlib
search carries on from the learned policy but does not repeat the exact episodes."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...base import SearchError
from ...space import SearchSpace
from .env import PruningEnv

if TYPE_CHECKING:  # Ray loads only when an RLlib agent is chosen
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

ENV_NAME = "secateurs-amc"
_BRIDGES: dict[str, _Bridge] = {}
_ids = itertools.count()


class _Bridge:
    """Policies out to the strategy, rewards back to the environment."""

    def __init__(self, space: SearchSpace, reward: str) -> None:
        self.space, self.reward = space, reward
        self.policies: queue.Queue = queue.Queue()
        self.rewards: queue.Queue = queue.Queue()
        self.closed = threading.Event()

    def evaluate(self, policy: dict[str, float]) -> float:
        """The reward of an episode's policy, from the strategy's `tell` (0 once closed)."""
        if self.closed.is_set():
            return 0.0
        self.policies.put(policy)
        return float(self.rewards.get())


def _to_torch(obj: Any) -> Any:
    """RLlib state (nested dicts of numpy arrays and plain values) with every array a tensor."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_torch(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _to_numpy(obj: Any) -> Any:
    """The inverse of `_to_torch`: tensors back to the numpy arrays RLlib's `set_state` takes."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def make_env(config: dict[str, Any]) -> PruningEnv:
    """RLlib's environment creator: the AMC environment rewarding through the bridge named in `config`."""
    bridge = _BRIDGES[config["bridge"]]
    return PruningEnv(bridge.space, bridge.reward, reward_fn=bridge.evaluate)


def _config(algo: str, steps: int, seed: int, options: dict[str, Any]) -> AlgorithmConfig:
    """A small RLlib config: one local env runner, a local learner, batches of a few episodes."""
    cfg: AlgorithmConfig
    if algo == "ppo":
        from ray.rllib.algorithms.ppo import PPOConfig

        episodes = int(options.get("episodes_per_iteration", 4))
        cfg = PPOConfig().training(
            train_batch_size_per_learner=steps * episodes,
            minibatch_size=steps,
            num_epochs=int(options.get("num_epochs", 4)),
            lr=float(options.get("lr", 3e-4)),
        )
    elif algo == "sac":
        from ray.rllib.algorithms.sac import SACConfig

        cfg = SACConfig().training(
            train_batch_size_per_learner=int(options.get("batch_size", 64)),
            num_steps_sampled_before_learning_starts=steps * int(options.get("warmup", 4)),
        )
        cfg = cfg.reporting(min_sample_timesteps_per_iteration=steps, min_time_s_per_iteration=0)
    else:
        raise SearchError(f"unknown RLlib algorithm {algo!r}; choose sac or ppo")
    return (
        cfg.env_runners(num_env_runners=0, rollout_fragment_length=steps).learners(num_learners=0).debugging(seed=seed)
    )


class RLlibDriver:
    """An RLlib algorithm training on a background thread, fed rewards through ask/tell."""

    def __init__(
        self,
        space: SearchSpace,
        algo: str,
        reward: str,
        seed: int = 0,
        options: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
            from ray.tune.registry import register_env
        except ImportError as exc:  # pragma: no cover - ray[rllib] is a dependency
            raise SearchError(f"the RLlib agent needs ray[rllib]: {exc}") from exc
        register_env(ENV_NAME, make_env)
        self.bridge_id = f"amc-{next(_ids)}"
        self.bridge = _Bridge(space, reward)
        _BRIDGES[self.bridge_id] = self.bridge
        self._ray = ray
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        cfg = _config(algo, len(space.keys), seed, dict(options or {}))
        cfg = cfg.environment(ENV_NAME, env_config={"bridge": self.bridge_id})
        self.algo = cfg.build_algo()
        if state:
            from ray.rllib.core import COMPONENT_LEARNER_GROUP

            self.algo.set_state({COMPONENT_LEARNER_GROUP: _to_numpy(state)})
        self.prefetched: dict[str, float] | None = None
        self.error: BaseException | None = None
        self.iterations = 0
        self.thread = threading.Thread(target=self._loop, name="amc-rllib", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            while not self.bridge.closed.is_set():
                self.algo.train()
                self.iterations += 1
        except BaseException as exc:  # noqa: BLE001 - whatever ends the thread is surfaced by next_policy
            self.error = exc
            self.bridge.policies.put(None)

    def next_policy(self, timeout: float = 3600.0) -> dict[str, float]:
        """The policy of the next episode RLlib plays (blocks until it reaches the last step)."""
        if self.prefetched is not None:
            policy, self.prefetched = self.prefetched, None
            return policy
        try:
            policy = self.bridge.policies.get(timeout=timeout)
        except queue.Empty as exc:
            raise SearchError("the RLlib agent produced no episode in time") from exc
        if policy is None:
            raise SearchError(f"the RLlib agent stopped: {self.error}")
        return policy

    def snapshot(self, awaiting_reward: bool) -> dict[str, Any]:
        """The learner's module weights and optimiser state, taken while the training thread is
        parked: at the episode awaiting its reward, or else at the next episode's last step
        (whose policy `next_policy` then returns)."""
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

        if not awaiting_reward and self.prefetched is None:
            self.prefetched = self.next_policy()
        learners = self.algo.learner_group
        if learners is None:
            raise SearchError("the RLlib algorithm has no learner group to take weights from")
        state = learners.get_state(
            components=[f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", f"{COMPONENT_LEARNER}/optimizer"]
        )
        return _to_torch(state)

    def give_reward(self, reward: float) -> None:
        """The reward of the episode last returned by `next_policy`."""
        self.bridge.rewards.put(float(reward))

    def close(self) -> None:
        """Stop training, release the algorithm (and the Ray instance if this driver started it)."""
        if self.bridge.closed.is_set():
            return
        self.bridge.closed.set()
        self.bridge.rewards.put(0.0)
        self.thread.join(timeout=120)
        try:
            self.algo.stop()
        finally:
            _BRIDGES.pop(self.bridge_id, None)
            if self.started_ray and self._ray.is_initialized():
                self._ray.shutdown()
