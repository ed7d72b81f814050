"""The ask/tell interface every search strategy implements (modelled on Optuna's ask/tell and
Ray Tune's `Searcher`): strategies propose per-layer policies and learn from their scores; they
know nothing of how or where candidates are evaluated (locally, on Ray, behind HTTP)."""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any


class SearchError(ValueError):
    """Bad search input: an infeasible target, an unknown strategy, a bad option."""


@dataclass
class Proposal:
    """A candidate a strategy asks to have evaluated.

    `policy` maps channel-group keys to pruning rates in [0, 1). `phase` names the strategy's
    stage (e.g. "sample", "finetune", "episode"); `evaluator` may ask for a specific evaluator
    by name (e.g. EagleEye's fine-tune of its top-k) instead of the job's default; `meta` is
    carried through to the result untouched."""

    id: int
    policy: dict[str, float]
    phase: str = "search"
    evaluator: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """What evaluating a proposal gave: the score (higher is better, e.g. accuracy) and the
    resources of the cut model."""

    proposal_id: int
    policy: dict[str, float]
    score: float
    flops: int = 0
    params: int = 0
    memory_bytes: int = 0
    latency_ms: float | None = None
    phase: str = "search"
    wall_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Strategy(abc.ABC):
    """A search over per-layer rates.

    The runner loops: `ask(n)` (up to n proposals; an empty list with `done` False means
    "waiting for results"), evaluate them, `tell(results)`. `best` is the chosen result.
    `state_dict()` must capture everything (RNG state included) so that `load_state_dict()` on
    a fresh instance, built with the same arguments, resumes the search exactly."""

    name: str = ""

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to `n` proposals to evaluate next."""

    @abc.abstractmethod
    def tell(self, results: list[Result]) -> None:
        """Scores of evaluated proposals."""

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True when the search has nothing more to ask."""

    @property
    @abc.abstractmethod
    def best(self) -> Result | None:
        """The result the strategy chooses (None before any result)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """State for resuming after a crash: nested dicts/lists of str, int, float, bool, None
        and torch tensors, so it round-trips through `torch.save` / `torch.load(weights_only=True)`."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""

    def progress(self) -> dict[str, Any]:
        """A short description of where the search stands, for progress displays:
        at least `fraction` in [0, 1] and `phase` (e.g. "NetAdapt: iteration 7")."""
        return {"fraction": 1.0 if self.done else 0.0, "phase": self.name}
