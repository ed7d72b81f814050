"""AMC's pruning environment (He et al., ECCV 2018, section 3) as a Gymnasium `Env`.

One episode walks the searchable channel groups of a `SearchSpace` in model order; each step's
action in [0, 1] is that group's pruning rate. The observation (all features in [0, 1]) is the
paper's layer embedding: group index, the group's first layer's dimensions (n out channels,
c in channels, input h, w, stride, kernel k), the FLOPs the group's channels carry, the FLOPs
already removed, the FLOPs of the layers still to come, and the previous action. Static
features are min-max normalised over the groups, FLOPs as fractions of the full network's.

The action is clamped so the budget stays reachable: it is raised to the smallest rate with
which the groups still to come, at their largest allowed rates, can bring the network under
the target, and never above the group's `max_rate` (so no group is ever cut to empty). Any
target kind of the space works: FLOPs, parameters and memory come from the space's exact cost
model (`pruning.cost`), latency from its lookup table.

The reward arrives at the last step: `reward_fn(policy)` when given (the RLlib agents use it to
evaluate there and then), else 0 with the policy in `info`, for the ask/tell strategy to
reward later. Rewards: "error" is AMC's FLOPs-constrained -error (the clamp guarantees the
budget); "resource" is the resource-aware -error * log(resource)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from pruning.cost import CostModel

from ...space import SearchSpace

REWARDS = ("error", "resource")
STATE_FEATURES = ("index", "n", "c", "h", "w", "stride", "k", "flops", "reduced", "rest", "previous")


def reward_value(kind: str, score: float, resource: float) -> float:
    """AMC's reward from a candidate's accuracy (`score`, in [0, 1]) and targeted resource."""
    error = 1.0 - float(score)
    if kind == "error":
        return -error
    if kind == "resource":
        return -error * math.log(max(float(resource), 1.0 + 1e-9))
    raise ValueError(f"unknown reward {kind!r}")


class SpaceCosts:
    """The targeted resource of kept-channel counts (the space's cost model or latency table),
    and the cost model's layer table for the state."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.model: CostModel = space.costs
        self.key = space.target.resource_key

    def resource(self, kept: Mapping[str, int]) -> float:
        """The targeted resource of the network with `kept` channels per group."""
        return float(self.space.count(kept)[self.key])


class PruningEnv(gym.Env):
    """AMC's layer-by-layer pruning environment over a search space."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium.Env declares it a plain attribute

    def __init__(
        self,
        space: SearchSpace,
        reward: str = "error",
        reward_fn: Callable[[dict[str, float]], float] | None = None,
        costs: SpaceCosts | None = None,
    ) -> None:
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of: {', '.join(REWARDS)}")
        self.space, self.reward, self.reward_fn = space, reward, reward_fn
        self.costs = costs or SpaceCosts(space)
        self.keys = list(space.keys)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(STATE_FEATURES),), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self._static = self._static_features()
        self._full_flops = self.costs.model.full_flops
        self.reset()

    def _static_features(self) -> np.ndarray:
        """Per group: index, n, c, h, w, stride, k and its FLOPs share, min-max normalised."""
        cm = self.costs.model
        by_name = {layer.name: layer for layer in cm.layers}
        rows = []
        for i, key in enumerate(self.keys):
            root = by_name[self.space.by_key[key].members[0]]
            carried = sum(layer.macs for layer in cm.layers if key in (layer.out_group, layer.in_group))
            rows.append(
                [i, root.out_channels, root.in_channels, root.height, root.width, root.stride, root.kernel, carried]
            )
        table = np.asarray(rows, dtype=np.float64)
        lo, hi = table.min(0), table.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return np.where(hi > lo, (table - lo) / span, 0.0)

    # ---- episode bookkeeping ------------------------------------------------------------
    def _kept(self, rates: dict[str, float]) -> dict[str, int]:
        return self.space.kept(rates)

    def _flops(self, rates: dict[str, float]) -> float:
        return self.costs.model.flops(self._kept(rates))

    def observation(self) -> np.ndarray:
        """The state of the current step (all features in [0, 1])."""
        t = min(self.t, len(self.keys) - 1)
        decided = dict(self.rates)
        reduced = 1.0 - self._flops(decided) / self._full_flops
        later = set(self.keys[t + 1 :])
        rest = (
            sum(layer.macs for layer in self.costs.model.layers if layer.out_group in later or layer.in_group in later)
            / self._full_flops
        )
        dyn = [reduced, min(1.0, rest), self.previous]
        return np.clip(np.concatenate([self._static[t], dyn]), 0.0, 1.0).astype(np.float32)

    def bounds(self) -> tuple[float, float]:
        """The allowed rate range of the current group: (least rate that keeps the budget
        reachable, largest allowed rate)."""
        key = self.keys[self.t]
        hi = self.space.bounds[key][1]
        rest_max = {k: self.space.bounds[k][1] for k in self.keys[self.t + 1 :]}
        channels = self.space.by_key[key].channels
        lo_keep = self.space.kept({key: hi})[key]
        budget = self.space.budget

        def fits(keep: int) -> bool:
            rates = {**self.rates, **rest_max, key: self.space.rate_for_kept(key, keep)}
            return self.costs.resource(self._kept(rates)) <= budget

        if fits(channels):
            return 0.0, hi
        low, high = lo_keep, channels  # fits(low) is assumed (the space checked the smallest network)
        while high - low > 1:
            mid = (low + high) // 2
            if fits(mid):
                low = mid
            else:
                high = mid
        return min(hi, self.space.rate_for_kept(key, low)), hi

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode at the first searchable group."""
        super().reset(seed=seed)
        self.t = 0
        self.rates: dict[str, float] = {}
        self.previous = 0.0
        return self.observation(), {}

    def clamp(self, action: float) -> float:
        """The rate the current group gets for a raw action."""
        lo, hi = self.bounds()
        return float(min(hi, max(lo, float(action))))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Clamp the action into this group's rate, move to the next group; the last step
        returns the reward (see the module doc) and the policy in `info`."""
        raw = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        rate = self.clamp(raw)
        key = self.keys[self.t]
        self.rates[key] = rate
        self.previous = rate
        self.t += 1
        done = self.t >= len(self.keys)
        info: dict[str, Any] = {"rate": rate, "raw_action": raw, "key": key}
        reward = 0.0
        if done:
            policy = dict(self.rates)
            info["policy"] = policy
            info["resource"] = self.costs.resource(self._kept(policy))
            if self.reward_fn is not None:
                reward = float(self.reward_fn(policy))
        return self.observation(), reward, done, False, info
