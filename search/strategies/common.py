"""Shared plumbing for strategies over a `SearchSpace`: proposal ids, a seeded NumPy RNG whose
state round-trips through `state_dict`, result bookkeeping and (de)serialising results."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

import numpy as np

from ..base import Proposal, Result, SearchError, Strategy
from ..space import SearchSpace, bisect_scalar


def result_to_state(r: Result) -> dict[str, Any]:
    """A Result as plain nested data for a state dict."""
    return asdict(r)


def result_from_state(d: Mapping[str, Any]) -> Result:
    """The Result a `result_to_state` dict came from."""
    return Result(**dict(d))


class SpaceStrategy(Strategy):
    """Base for strategies searching a `SearchSpace`: `self.rng` (NumPy PCG64 seeded by `seed`),
    `self._propose` numbers proposals, `self.history` keeps every told result, and the state
    dict carries both plus whatever `_extra_state` adds."""

    default_evaluator: str | None = "adaptive-bn"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"strategy {self.name!r} needs a SearchSpace")
        self.space = space
        self.seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.next_id = 0
        self.history: list[Result] = []
        self.outstanding: dict[int, Proposal] = {}
        self._reissue: list[Proposal] = []

    def _propose(self, policy: Mapping[str, float], phase: str, evaluator: str | None = None,
                 **meta: Any) -> Proposal:
        p = Proposal(id=self.next_id, policy={k: float(v) for k, v in self.space.clip(policy).items()},
                     phase=phase, evaluator=evaluator, meta=dict(meta))
        self.next_id += 1
        self.outstanding[p.id] = p
        return p

    def _reissued(self, n: int) -> list[Proposal]:
        """Proposals asked before a restore but never told: asked again first."""
        out, self._reissue = self._reissue[:n], self._reissue[n:]
        return out

    def _accept(self, results: list[Result]) -> list[Result]:
        """Record told results (dropping ids not outstanding) and return the new ones."""
        new = []
        for r in results:
            if self.outstanding.pop(r.proposal_id, None) is None:
                continue
            self.history.append(r)
            new.append(r)
        return new

    @staticmethod
    def _best_of(results: list[Result]) -> Result | None:
        """Highest score; ties go to the earlier result."""
        best = None
        for r in results:
            if best is None or r.score > best.score:
                best = r
        return best

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Restore what `_extra_state` saved."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "seed": self.seed, "rng": self.rng.bit_generator.state, "next_id": self.next_id,
            "history": [result_to_state(r) for r in self.history],
            "outstanding": [asdict(p) for p in self.outstanding.values()],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise SearchError(f"state is for strategy {state.get('name')!r}, not {self.name!r}")
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self.next_id = int(state["next_id"])
        self.history = [result_from_state(d) for d in state["history"]]
        self.outstanding = {int(d["id"]): Proposal(**d) for d in state.get("outstanding", [])}
        self._reissue = list(self.outstanding.values())
        self._load_extra(state.get("extra", {}))


class OneShotStrategy(SpaceStrategy):
    """A strategy that bisects one scalar `r` (subclasses map it to a policy in `_policy`) to
    the smallest value whose network fits the budget, then evaluates that single policy."""

    phase: str = ""

    def __init__(self, space: SearchSpace, seed: int = 0, upper: float = 0.999) -> None:
        super().__init__(space, seed)
        self.rate, self.policy = bisect_scalar(space, self._policy, 0.0, upper)
        self.asked = False

    def _policy(self, rate: float) -> dict[str, float]:
        raise NotImplementedError

    def _describe(self) -> str:
        """The phase text for progress displays."""
        return f"{self.phase} at {self.rate:.3f}"

    def ask(self, n: int = 1) -> list[Proposal]:
        again = self._reissued(n)
        if again or self.asked:
            return again
        self.asked = True
        return [self._propose(self.policy, self.phase, rate=self.rate)]

    def tell(self, results: list[Result]) -> None:
        self._accept(results)

    @property
    def done(self) -> bool:
        return self.asked and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self._best_of(self.history)

    def progress(self) -> dict[str, Any]:
        return {"fraction": 1.0 if self.done else 0.0, "phase": self._describe()}

    def _extra_state(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.asked = bool(state["asked"])
