"""DDPG (Lillicrap et al., 2016) as AMC uses it (He et al., ECCV 2018, and its reference code):
actor and critic MLPs, truncated-normal exploration noise whose width decays after the random
warm-up episodes, a replay buffer, a moving-average baseline subtracted from the reward, and
undiscounted targets (gamma = 1) because every transition of an episode carries that episode's
final reward. Everything (weights, optimisers, buffer, noise schedule, RNG) is in `state_dict()`."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DDPGConfig:
    """Hyper-parameters; the defaults are those of AMC's reference search script."""

    hidden1: int = 300
    hidden2: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    buffer_size: int = 2000
    init_delta: float = 0.5
    delta_decay: float = 0.95
    moving_alpha: float = 0.5
    init_w: float = 3e-3
    low: float = 0.0
    high: float = 1.0


def _mlp(n_in: int, n_out: int, cfg: DDPGConfig, sigmoid: bool) -> nn.Sequential:
    """Two hidden ReLU layers; the last layer starts near zero as in the reference code."""
    # built in this order so a seed gives the same initial weights as ever
    first = nn.Linear(n_in, cfg.hidden1)
    second = nn.Linear(cfg.hidden1, cfg.hidden2)
    head = nn.Linear(cfg.hidden2, n_out)
    nn.init.uniform_(head.weight, -cfg.init_w, cfg.init_w)
    nn.init.uniform_(head.bias, -cfg.init_w, cfg.init_w)
    layers: list[nn.Module] = [first, nn.ReLU(), second, nn.ReLU(), head]
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next_state, done) transitions as tensors."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int) -> None:
        self.capacity = capacity
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity, action_dim)
        self.rewards = torch.zeros(capacity)
        self.next_states = torch.zeros(capacity, state_dim)
        self.dones = torch.zeros(capacity)
        self.size = 0
        self.pos = 0

    def add(
        self, state: torch.Tensor, action: torch.Tensor, reward: float, next_state: torch.Tensor, done: bool
    ) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.pos
        self.states[i], self.actions[i], self.next_states[i] = state, action, next_state
        self.rewards[i], self.dones[i] = float(reward), float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """`n` transitions drawn uniformly with replacement."""
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return self.states[idx], self.actions[idx], self.rewards[idx], self.next_states[idx], self.dones[idx]

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (only the filled part) and the write position."""
        return {
            "states": self.states[: self.size].clone(),
            "actions": self.actions[: self.size].clone(),
            "rewards": self.rewards[: self.size].clone(),
            "next_states": self.next_states[: self.size].clone(),
            "dones": self.dones[: self.size].clone(),
            "pos": self.pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        n = len(state["rewards"])
        self.states[:n], self.actions[:n], self.rewards[:n] = state["states"], state["actions"], state["rewards"]
        self.next_states[:n], self.dones[:n] = state["next_states"], state["dones"]
        self.size, self.pos = n, int(state["pos"])


def truncated_normal(
    mu: torch.Tensor, sigma: float, low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    """A sample of N(mu, sigma) truncated to [low, high], by inverse CDF (what AMC draws with
    scipy's truncnorm around the actor's action)."""
    if sigma <= 0:
        return mu.clamp(low, high)
    normal = torch.distributions.Normal(mu, torch.full_like(mu, sigma))
    lo, hi = normal.cdf(torch.full_like(mu, low)), normal.cdf(torch.full_like(mu, high))
    u = torch.rand(mu.shape, generator=generator)
    p = (lo + u * (hi - lo)).clamp(1e-6, 1 - 1e-6)
    return normal.icdf(p).clamp(low, high)


class DDPG:
    """The agent: `act` (random, noisy or greedy), `observe` transitions, `update` once."""

    def __init__(self, state_dim: int, action_dim: int = 1, config: DDPGConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or DDPGConfig()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.actor = _mlp(state_dim, action_dim, self.cfg, sigmoid=True)
            self.critic = _mlp(state_dim + action_dim, 1, self.cfg, sigmoid=False)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr_critic)
        self.buffer = ReplayBuffer(self.cfg.buffer_size, state_dim, action_dim)
        self.moving_average: float | None = None
        self.delta = self.cfg.init_delta
        self.updates = 0

    def set_noise(self, episodes_after_warmup: int) -> float:
        """Exploration width for this episode: init_delta * delta_decay ** (episodes since warm-up)."""
        self.delta = self.cfg.init_delta * self.cfg.delta_decay ** max(0, episodes_after_warmup)
        return self.delta

    def random_action(self) -> torch.Tensor:
        """Uniform in [low, high] (the warm-up episodes)."""
        u = torch.rand(self.action_dim, generator=self.generator)
        return self.cfg.low + u * (self.cfg.high - self.cfg.low)

    @torch.no_grad()
    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        """The actor's action, perturbed by truncated-normal noise of width `delta` if exploring."""
        mu = self.actor(state.float().unsqueeze(0))[0]
        if not explore:
            return mu.clamp(self.cfg.low, self.cfg.high)
        return truncated_normal(mu, self.delta, self.cfg.low, self.cfg.high, self.generator)

    def observe(
        self, state: torch.Tensor, action: torch.Tensor, reward: float, next_state: torch.Tensor, done: bool
    ) -> None:
        """Store a transition."""
        self.buffer.add(state, action, reward, next_state, done)

    def update(self) -> dict[str, float]:
        """One critic and one actor step on a replay minibatch, then soft target updates.
        Rewards are centred by the moving average of minibatch means (AMC's baseline)."""
        if self.buffer.size == 0:
            return {}
        s, a, r, s2, d = self.buffer.sample(self.cfg.batch_size, self.generator)
        mean_r = float(r.mean())
        if self.moving_average is None:
            self.moving_average = mean_r
        else:
            self.moving_average += self.cfg.moving_alpha * (mean_r - self.moving_average)
        r = r - self.moving_average
        with torch.no_grad():
            next_q = self.critic_target(torch.cat([s2, self.actor_target(s2)], 1)).squeeze(1)
            target = r + self.cfg.discount * (1.0 - d) * next_q
        q = self.critic(torch.cat([s, a], 1)).squeeze(1)
        critic_loss = F.mse_loss(q, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                    tp.mul_(1 - self.cfg.tau).add_(p, alpha=self.cfg.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item()}

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, buffer, baseline, noise and RNG: enough to resume exactly."""
        return {
            "config": asdict(self.cfg),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "moving_average": self.moving_average,
            "delta": self.delta,
            "updates": self.updates,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
        self.moving_average = state["moving_average"]
        self.delta = float(state["delta"])
        self.updates = int(state["updates"])
        self.generator.set_state(state["rng"])
