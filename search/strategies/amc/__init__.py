"""AMC: AutoML for Model Compression (He et al., ECCV 2018). A DDPG agent learns per-layer
pruning rates on a Gymnasium environment over the search space; candidates are scored after
least-squares weight reconstruction instead of fine-tuning. Importing this package registers
the `amc` strategy, the `reconstruct` evaluator and the `secateurs/AMCPruning-v0` Gymnasium
environment; the RLlib agents (`search.strategies.amc.rllib_agent`, which needs Ray) load only when chosen."""

from __future__ import annotations

import gymnasium as gym

from .ddpg import DDPG, DDPGConfig
from .env import PruningEnv, reward_value
from .evaluator import ReconstructEvaluator
from .reconstruct import prune_and_reconstruct
from .strategy import AMCStrategy

ENV_ID = "secateurs/AMCPruning-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="search.strategies.amc.env:PruningEnv")

__all__ = [
    "DDPG",
    "ENV_ID",
    "AMCStrategy",
    "DDPGConfig",
    "PruningEnv",
    "ReconstructEvaluator",
    "prune_and_reconstruct",
    "reward_value",
]
