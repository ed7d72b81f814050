"""The ask/tell interface every search strategy implements (modelled on Optuna's ask/tell and
Ray Tune's `Searcher`): strategies propose per-layer policies and learn from their scores; they
know nothing of how or where candidates are evaluated (locally, on Ray, behind HTTP)."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..base import Proposal, Result
from ..space import SearchSpace


class Strategy(abc.ABC):
    """A search over per-layer rates.

    The runner loops: `ask(n)` (up to n proposals; an empty list with `done` False means
    "waiting for results"), evaluate them, `tell(results)`. `best` is the chosen result.

    Record and state (as in Optuna's RDB storage: the trials are the record, a sampler keeps
    only its own state): the caller keeps the record, every evaluated candidate (`Result`
    of kind "candidate"); `state_dict()` holds only what the strategy cannot get back from
    the record (RNG state, next proposal id, outstanding proposals, counters, queues, agent
    weights), so it stays bounded as candidates grow. `load_state_dict(state, history)`, on a
    fresh instance built with the same arguments, takes that state and the record and resumes
    the search exactly as it stood when `state_dict()` was called.

    Optional capabilities, with defaults here, that callers use without probing:
    `default_evaluator`, `space`, `base_model()`, `without_selection()`, `write_artifacts()`,
    `close()`."""

    name: ClassVar[str] = ""
    default_evaluator: ClassVar[str] = "adaptive-bn"
    """The evaluator a job uses when it names none (e.g. NetAdapt "finetune", AMC "reconstruct")."""

    space: SearchSpace | None = None
    """The search space the strategy searches (its target names the resource the runner
    puts on the Pareto front); None for a strategy without one."""

    def __init__(self, space: SearchSpace, seed: int = 0, **options: Any) -> None:
        """Every strategy is built as `Cls(space, seed=seed, **options)` (`search.registry.make_strategy`):
        a subclass takes its options as keyword arguments; unknown ones are a TypeError."""
        if options:
            raise TypeError(f"unexpected option(s): {', '.join(sorted(options))}")
        self.space = space

    @classmethod
    def base_model(cls, options: Mapping[str, Any], zoo: str, args: Mapping[str, Any]) -> tuple[str, str] | None:
        """For a strategy that brings the trained model (AutoSlim: its supernet at full width):
        `(weights path, criterion)` the job must use instead of its own, from the strategy's
        options, the model zoo name and the model's arguments; raises SearchError when they
        do not fit. None (the default): the job's model and criterion."""
        return None

    @classmethod
    def without_selection(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The strategy's options with its own final selection stage turned off (EagleEye's
        fine-tune of its top k), for a caller that selects among the candidates itself (the
        job's `search.selection: asha`). By default the options as given: nothing to turn off."""
        return dict(options)

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to `n` proposals to evaluate next."""

    @abc.abstractmethod
    def tell(self, results: list[Result]) -> None:
        """Scores of evaluated proposals (candidates and work alike)."""

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
        """The strategy's own state for resuming after a crash, without the results the record
        holds: nested dicts/lists of str, int, float, bool, None and torch tensors, so it
        round-trips through `torch.save` / `torch.load(weights_only=True)`."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any], history: Sequence[Result]) -> None:
        """Restore from `state_dict()` and the record `history` (the caller's stored candidate
        results, in any order; results of other ids, e.g. stored after the checkpoint, are
        ignored here and reused by the runner when their proposals are asked again)."""

    def progress(self) -> dict[str, Any]:
        """A short description of where the search stands, for progress displays:
        at least `fraction` in [0, 1] and `phase` (e.g. "NetAdapt: iteration 7")."""
        return {"fraction": 1.0 if self.done else 0.0, "phase": self.name}

    def write_artifacts(self, out_dir: Path) -> dict[str, str]:
        """Write the strategy's own files into `out_dir` once it is done (e.g. sensitivity's
        table and plot, AMC's rewards) and return them as {name: path}; by default nothing."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Release what the strategy holds outside this process (AMC's RLlib thread); by
        default nothing. Safe to call more than once."""
