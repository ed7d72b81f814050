"""The types every part of the search shares: what a strategy proposes (`Proposal`), what
evaluating it gave (`Result`), the one error (`SearchError`) and the bounded option types.
It imports no other search module, so the space, targets, latency tables, evaluators and
strategies all build on it without an import circle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import Field

Kind = Literal["candidate", "work"]

# The types strategies and evaluators annotate their options with: each constructor's signature
# declares its options, bounds included, and is their schema (`search.registry.strategy_options`,
# `search.evaluators.evaluator_options`): a bad value is refused at submit, naming the option.
Count = Annotated[int, Field(ge=1, le=1_000_000)]
"""How many of something (samples, trials, episodes, iterations): at least one."""
Steps = Annotated[int, Field(ge=0, le=1_000_000)]
"""A number of SGD steps (or other work) that may be zero."""
LearningRate = Annotated[float, Field(gt=0, le=10)]
Fraction = Annotated[float, Field(ge=0, le=1)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
Rate = Annotated[float, Field(ge=0, lt=1)]
"""A pruning rate: the share of a group's channels cut."""


class SearchError(ValueError):
    """Bad search input: an infeasible target, an unknown strategy, a bad option."""


@dataclass
class Proposal:
    """What a strategy asks to have evaluated.

    `policy` maps channel-group keys to pruning rates in [0, 1). `phase` names the strategy's
    stage (e.g. "sample", "finetune", "episode"); `evaluator` may ask for a specific evaluator
    by name (e.g. EagleEye's fine-tune of its top-k) instead of the job's default, built with
    `evaluator_options` (e.g. `{"steps": 100, "lr": 0.01}`); `meta` is carried through to the
    result untouched.

    `kind` says what the result is: "candidate" (the default) is a scored sub-network, kept
    in the search record; "work" is a step the strategy needs done that is no candidate
    (MetaPruning's PruningNet training chunks): its result is told to the strategy and
    reported as an event, never recorded, counted or put on the Pareto front."""

    id: int
    policy: dict[str, float]
    phase: str = "search"
    evaluator: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    kind: Kind = "candidate"


@dataclass
class Result:
    """What evaluating a proposal gave: the score (higher is better, e.g. accuracy) and the
    resources of the cut model. `kind` is the proposal's (the runner copies it over)."""

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
    kind: Kind = "candidate"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        """The Result an `as_dict()` came from; keys that are no field (e.g. a store row's
        sequence number) are ignored, missing optional fields take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
