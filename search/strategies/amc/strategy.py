"""`AMCStrategy`: AMC (He et al., ECCV 2018) as an ask/tell strategy.

`ask()` rolls out one episode of `PruningEnv` with the current actor (uniform random actions
during the warm-up episodes, then the actor plus truncated-normal noise) and proposes the
episode's policy; `tell()` turns the score into the episode's reward, gives it to every
transition of the episode and, after warm-up, runs one DDPG update per transition, as the
reference code does. Warm-up episodes do not depend on each other, so up to `n` are proposed
at once; after warm-up each episode waits for the previous one's reward.

`agent="rllib-sac"` or `"rllib-ppo"` runs the same environment under an RLlib algorithm
instead (see `search.strategies.amc.rllib_agent`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import Field

from pruning.registry import OneOf

from ...base import BatchSize, Count, Fraction, LearningRate, Proposal, Result, SearchError, Steps
from ...evaluators import list_evaluators
from ...registry import register_strategy
from ...space import SearchSpace
from ..common import SpaceStrategy
from .ddpg import DDPG, DDPGConfig
from .env import REWARDS, STATE_FEATURES, PruningEnv, reward_value

if TYPE_CHECKING:  # the RLlib driver (and Ray) load only when an RLlib agent is chosen
    from .rllib_agent import RLlibDriver

AGENTS = ("ddpg", "rllib-sac", "rllib-ppo")


@register_strategy("amc")
class AMCStrategy(SpaceStrategy):
    """Learn per-group rates with a DDPG agent over AMC's layer-by-layer environment.

    Options: `episodes` (total, warm-up included), `warmup` (random episodes, default a
    quarter), `reward` ("error" or "resource"), `agent` ("ddpg", "rllib-sac", "rllib-ppo"),
    `evaluator` (the evaluator proposals ask for; None leaves the job's), and DDPG
    hyper-parameters (`hidden`, `lr_actor`, `lr_critic`, `tau`, `batch_size`, `init_delta`,
    `delta_decay`, `buffer_size`, `discount`)."""

    name = "amc"
    default_evaluator = "reconstruct"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        episodes: Count = 100,
        warmup: Steps | None = None,
        reward: Annotated[str, OneOf(REWARDS)] = "error",
        agent: Annotated[str, OneOf(AGENTS)] = "ddpg",
        evaluator: Annotated[str, OneOf(list_evaluators)] | None = "reconstruct",
        hidden: Annotated[int, Field(ge=1, le=4096)] = 300,
        lr_actor: LearningRate = 1e-4,
        lr_critic: LearningRate = 1e-3,
        tau: Fraction = 0.01,
        batch_size: BatchSize = 64,
        init_delta: Annotated[float, Field(ge=0, le=10)] = 0.5,
        delta_decay: Fraction = 0.95,
        buffer_size: Count | None = None,
        discount: Fraction = 1.0,
        rllib_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(space, seed)
        if reward not in REWARDS:  # names checked again for callers that build the class directly
            raise SearchError(f"unknown amc reward {reward!r}; choose one of: {', '.join(REWARDS)}")
        if agent not in AGENTS:
            raise SearchError(f"unknown amc agent {agent!r}; choose one of: {', '.join(AGENTS)}")
        self.episodes = int(episodes)
        self.warmup = int(warmup) if warmup is not None else max(1, self.episodes // 4)
        if not 0 <= self.warmup <= self.episodes:
            raise SearchError(f"amc warmup must be between 0 and episodes, got {warmup}")
        self.reward_kind, self.agent_name, self.evaluator = reward, agent, evaluator
        self.env = PruningEnv(space, reward)
        steps = len(self.env.keys)
        cfg = DDPGConfig(
            hidden1=hidden,
            hidden2=hidden,
            lr_actor=lr_actor,
            lr_critic=lr_critic,
            tau=tau,
            batch_size=batch_size,
            init_delta=init_delta,
            delta_decay=delta_decay,
            discount=discount,
            buffer_size=int(buffer_size) if buffer_size else 100 * steps,
        )
        self.agent = DDPG(len(STATE_FEATURES), 1, cfg, seed=self.seed)  # the env's observation size
        self.rllib: RLlibDriver | None = None
        self.rllib_options = dict(rllib_options or {})
        self.rllib_state: dict[str, Any] | None = None
        self.started = 0
        self.told = 0
        self.pending: dict[int, dict[str, torch.Tensor]] = {}
        self.rewards: list[float] = []
        self.best_reward: float | None = None
        self.best_result: Result | None = None

    # ---- episodes -------------------------------------------------------------------------
    def _rollout(self, episode: int) -> tuple[dict[str, float], dict[str, torch.Tensor], float | None]:
        """One episode with the agent: its policy, its transitions and the noise used."""
        warm = episode < self.warmup
        noise = None if warm else self.agent.set_noise(episode - self.warmup)
        obs, _ = self.env.reset()
        states, actions, nexts, dones = [], [], [], []
        done = False
        while not done:
            state = torch.as_tensor(obs)
            action = self.agent.random_action() if warm else self.agent.act(state, explore=True)
            obs, _, done, _, info = self.env.step(action.numpy())
            states.append(state)
            actions.append(torch.tensor([info["rate"]], dtype=torch.float32))
            nexts.append(torch.as_tensor(obs))
            dones.append(float(done))
        trans = {
            "states": torch.stack(states),
            "actions": torch.stack(actions),
            "next_states": torch.stack(nexts),
            "dones": torch.tensor(dones),
        }
        return info["policy"], trans, noise

    def _propose_episode(self) -> Proposal:
        episode = self.started
        self.started += 1
        if self.agent_name != "ddpg":
            policy = self._rllib().next_policy()
            trans: dict[str, torch.Tensor] = {}
            noise = None
        else:
            policy, trans, noise = self._rollout(episode)
        meta: dict[str, Any] = {"episode": episode, "warmup": episode < self.warmup, "noise": noise}
        p = self._propose(policy, "episode", self.evaluator, **meta)
        self.pending[p.id] = trans
        return p

    def _rllib(self):
        if self.rllib is None:
            from .rllib_agent import RLlibDriver

            self.rllib = RLlibDriver(
                self.space,
                self.agent_name.removeprefix("rllib-"),
                self.reward_kind,
                seed=self.seed,
                options=self.rllib_options,
                state=self.rllib_state,
            )
        return self.rllib

    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to `n` episodes during warm-up, then one at a time."""
        again = self._reissued(n)
        if again:
            return again
        out: list[Proposal] = []
        while len(out) < n and self.started < self.episodes:
            sequential = self.agent_name != "ddpg" or self.started >= self.warmup
            if sequential and (self.outstanding or out):
                break
            out.append(self._propose_episode())
        return out

    def tell(self, results: list[Result]) -> None:
        """Reward each told episode's transitions and, after warm-up, update the agent."""
        for r in self._accept(results):
            reward = self._reward(r)
            trans = self.pending.pop(r.proposal_id, {})
            if self.agent_name != "ddpg":
                self._rllib().give_reward(reward)
                continue
            learn = int(r.meta.get("episode", 0)) >= self.warmup
            for i in range(len(trans.get("dones", []))):
                self.agent.observe(
                    trans["states"][i], trans["actions"][i], reward, trans["next_states"][i], bool(trans["dones"][i])
                )
                if learn:
                    self.agent.update()
        if self.done and self.rllib is not None:
            self.rllib.close()

    def _reward(self, r: Result) -> float:
        """The episode's reward; counts it and keeps the best (ties: the earlier episode)."""
        resource = getattr(r, self.space.target.resource_key) or 0.0
        reward = reward_value(self.reward_kind, r.score, float(resource))
        self.rewards.append(reward)
        self.told += 1
        if self.best_reward is None or reward > self.best_reward:
            self.best_reward, self.best_result = reward, r
        return reward

    @property
    def done(self) -> bool:
        return self.started >= self.episodes and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self.best_result

    def close(self) -> None:
        """Stop the RLlib agent's training thread, if any."""
        if self.rllib is not None:
            self.rllib.close()

    def progress(self) -> dict[str, Any]:
        last = self.rewards[-1] if self.rewards else None
        phase = f"AMC episode {self.told}/{self.episodes}"
        if self.told and self.told <= self.warmup:
            phase += " (warm-up)"
        if last is not None:
            phase += f", reward {last:.4f}, best {self.best_reward:.4f}, noise {self.agent.delta:.3f}"
        return {
            "fraction": self.told / self.episodes,
            "phase": phase,
            "episode": self.told,
            "reward": last,
            "best_reward": self.best_reward,
            "noise": self.agent.delta if self.told > self.warmup else None,
        }

    # ---- artefacts ------------------------------------------------------------------------
    def write_artifacts(self, out_dir: str | Path) -> dict[str, str]:
        """`amc_rewards.json` (reward and noise per episode) and `amc_rewards.png`: reward per
        episode with the best so far, the warm-up shaded."""
        out = Path(out_dir)
        noise = [r.meta.get("noise") for r in self.history]
        (out / "amc_rewards.json").write_text(
            json.dumps(
                {"warmup": self.warmup, "rewards": self.rewards, "noise": noise, "best_reward": self.best_reward},
                indent=1,
            )
        )
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        best = [max(self.rewards[: i + 1]) for i in range(len(self.rewards))]
        ax.plot(self.rewards, lw=1, label="episode reward")
        ax.plot(best, lw=1, label="best so far")
        ax.axvspan(-0.5, self.warmup - 0.5, color="grey", alpha=0.15, label="random warm-up")
        ax.set_xlabel("episode")
        ax.set_ylabel(f"reward ({self.reward_kind})")
        ax.set_title(f"AMC ({self.agent_name})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "amc_rewards.png", dpi=100)
        plt.close(fig)
        return {"amc_rewards_json": str(out / "amc_rewards.json"), "amc_rewards_plot": str(out / "amc_rewards.png")}

    # ---- state ----------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        # rewards and the best episode come back from the record; transitions only of outstanding episodes
        return {
            "agent": self.agent.state_dict(),
            "started": self.started,
            "told": self.told,
            "pending": {str(k): v for k, v in self.pending.items()},
            "rllib": self._rllib_snapshot(),
        }

    def _rllib_snapshot(self) -> dict[str, Any] | None:
        """The RLlib learner's state (None for DDPG or before RLlib started); once the search is
        done, the last snapshot taken."""
        if self.rllib is not None and not self.done and self.rllib.error is None:
            self.rllib_state = self.rllib.snapshot(awaiting_reward=bool(self.outstanding))
        return self.rllib_state

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.started = int(state["started"])
        self.pending = {int(k): v for k, v in state["pending"].items()}
        self.rewards, self.told, self.best_reward, self.best_result = [], 0, None, None
        for r in self.history:
            self._reward(r)
        if self.told != int(state["told"]):
            raise SearchError(f"amc: the record holds {self.told} of the {int(state['told'])} episodes told")
        self.rllib_state = state.get("rllib")
        if self.agent_name != "ddpg":
            # RLlib restarts from the learner's saved weights; unanswered episodes are played anew.
            self._drop_outstanding()
            self.pending = {}
            self.started = self.told
