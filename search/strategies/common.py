"""Shared plumbing for strategies over a `SearchSpace`: proposal ids, a seeded NumPy RNG whose
state round-trips through `state_dict`, the told results (rebuilt from the caller's record on
load, never saved) and (de)serialising results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..base import Kind, Proposal, Result, SearchError
from ..space import SearchSpace, bisect_scalar
from .base import Strategy


def result_to_state(r: Result) -> dict[str, Any]:
    """A Result as plain nested data (for a record kept as dicts)."""
    return asdict(r)


def result_from_state(d: Mapping[str, Any] | Result) -> Result:
    """The Result a `result_to_state` dict came from (a Result is returned as it is)."""
    return d if isinstance(d, Result) else Result.from_dict(d)


def told_results(history: Sequence[Result | Mapping[str, Any]], next_id: int, untold: set[int]) -> list[Result]:
    """The candidate results of `history` a strategy had told when its state was saved: those
    whose proposal id was issued (`< next_id`) and is not `untold` (outstanding, queued or
    dropped), one per id (the first stored), in proposal-id order. Results stored after the
    checkpoint (outstanding or not yet issued ids) are left out; work is never in a record."""
    by_id: dict[int, Result] = {}
    for item in history:
        r = result_from_state(item)
        pid = int(r.proposal_id)
        if r.kind == "candidate" and 0 <= pid < next_id and pid not in untold:
            by_id.setdefault(pid, r)
    return [by_id[i] for i in sorted(by_id)]


class SpaceStrategy(Strategy):
    """Base for strategies searching a `SearchSpace`: `self.rng` (NumPy PCG64 seeded by `seed`),
    `self._propose` numbers proposals, `self.history` keeps every told candidate result.

    The state dict holds the RNG, the next id, the outstanding proposals (asked, not told),
    ids `dropped` for good, the count of told candidates and whatever `_extra_state` adds;
    never results. `load_state_dict(state, history)` takes the told results back from the
    record (`told_results`), checks their count and lets `_load_extra` rebuild the rest from
    `self.history`. Outstanding proposals are asked again first (`_reissued`), with their
    ids and policies, so the runner reuses any result stored for them."""

    default_evaluator = "adaptive-bn"
    space: SearchSpace

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"strategy {self.name!r} needs a SearchSpace")
        self.space = space
        self.seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.next_id = 0
        self.history: list[Result] = []
        self.outstanding: dict[int, Proposal] = {}
        self.dropped: list[int] = []
        self._reissue: list[Proposal] = []

    def _propose(
        self,
        policy: Mapping[str, float],
        phase: str,
        evaluator: str | None = None,
        *,
        evaluator_options: Mapping[str, Any] | None = None,
        kind: Kind = "candidate",
        **meta: Any,
    ) -> Proposal:
        p = Proposal(
            id=self.next_id,
            policy={k: float(v) for k, v in self.space.clip(policy).items()},
            phase=phase,
            evaluator=evaluator,
            meta=dict(meta),
            evaluator_options=dict(evaluator_options or {}),
            kind=kind,
        )
        self.next_id += 1
        self.outstanding[p.id] = p
        return p

    def _reissued(self, n: int) -> list[Proposal]:
        """Proposals asked before a restore but never told: asked again first."""
        out, self._reissue = self._reissue[:n], self._reissue[n:]
        return out

    def _drop_outstanding(self) -> None:
        """Abandon every outstanding proposal for good (their ids are never told; a result
        stored for one is not taken as told on a later load)."""
        self.dropped.extend(sorted(self.outstanding))
        self.outstanding, self._reissue = {}, []

    def _accept(self, results: list[Result]) -> list[Result]:
        """Take told results (dropping ids not outstanding) and return the new ones; candidate
        results (not work) go into `history`."""
        new = []
        for r in results:
            p = self.outstanding.pop(r.proposal_id, None)
            if p is None:
                continue
            if p.kind == "candidate":
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
        """The subclass's own state (bounded: counters, queues, weights; no results)."""
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Restore what `_extra_state` saved and rebuild the rest from `self.history` (the told
        candidates, in proposal-id order; `self.outstanding` and `self._reissue` are set)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self.next_id,
            "outstanding": [asdict(p) for p in self.outstanding.values()],
            "dropped": list(self.dropped),
            "told": len(self.history),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any], history: Sequence[Result]) -> None:
        if state.get("name") != self.name:
            raise SearchError(f"state is for strategy {state.get('name')!r}, not {self.name!r}")
        if "history" in state:
            raise SearchError(
                "this checkpoint is from an older version that stored results in the strategy "
                "state; it cannot be resumed"
            )
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self.next_id = int(state["next_id"])
        self.outstanding = {int(d["id"]): Proposal(**d) for d in state.get("outstanding", [])}
        self.dropped = [int(i) for i in state.get("dropped", [])]
        self.history = told_results(history, self.next_id, set(self.outstanding) | set(self.dropped))
        if len(self.history) != int(state["told"]):
            raise SearchError(
                f"the record holds {len(self.history)} of the {int(state['told'])} results the "
                f"{self.name} checkpoint had told; resume with the job's stored candidates"
            )
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
