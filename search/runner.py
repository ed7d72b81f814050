"""The local search loop: ask → evaluate → tell until the strategy is done or asked to stop.

The record of a search is its candidates (results of proposals of kind "candidate"), in the
order they were evaluated: the runner keeps them, reports each (`on_result`), keeps the Pareto
front (resource against score) and checkpoints the strategy's own state after every tell (no
results: the caller stores those as they come). Work (proposals of kind "work", e.g.
MetaPruning's PruningNet training chunks) is told to the strategy and reported as an event,
never recorded. On resume the caller passes its record as `previous` (and to the strategy's
`load_state_dict`): results for proposals asked again (matched by id and policy) are reused,
not evaluated again. Evaluation is delegated to `executor(proposals) -> results`; the workers
layer passes one that fans out to Ray actors, the default evaluates in turn here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Proposal, Result, SearchError
from .evaluators import Evaluator, EvaluatorPool
from .strategies.base import Strategy

Executor = Callable[[list[Proposal]], list[Result]]


@dataclass
class SearchOutcome:
    """What a search produced: the chosen result, every candidate in order (the record: the
    previous run's first), the Pareto front, wall time, whether it was stopped before the
    strategy finished, and the events reported on the way (progress, work, stopped)."""

    best: Result | None
    results: list[Result]
    pareto: list[Result]
    seconds: float
    stopped: bool = False
    capped: bool = False  # stopped because `max_candidates` were evaluated, not because asked to
    resource: str = "flops"
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def candidates_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


def pareto_front(results: Iterable[Result], resource: str = "flops") -> list[Result]:
    """Results no other result beats on both score (higher) and resource (lower), by resource."""
    pts = sorted(
        (r for r in results if getattr(r, resource, None) is not None), key=lambda r: (getattr(r, resource), -r.score)
    )
    front: list[Result] = []
    best_score = float("-inf")
    for r in pts:
        if r.score > best_score:
            front.append(r)
            best_score = r.score
    return front


def local_executor(evaluator: Evaluator) -> Executor:
    """Evaluate proposals one after another in this process, each with the evaluator it asks for."""
    pool = EvaluatorPool(evaluator)
    return lambda proposals: [pool.evaluate(p) for p in proposals]


def _same_policy(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(float(a[k]) - float(b[k])) < 1e-9 for k in a)


def run_search(
    strategy: Strategy,
    evaluator: Evaluator | None,
    executor: Executor | None = None,
    batch_size: int = 1,
    on_result: Callable[[Result], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    previous: Sequence[Result] | None = None,
    resource: str | None = None,
    max_candidates: int | None = None,
) -> SearchOutcome:
    """Run `strategy` to completion (or until `should_stop()` or `max_candidates`), evaluating
    its proposals with `executor` (default: `evaluator` in this process).

    - Candidates: each new one is appended to `outcome.results`, passed to `on_result` (the
      caller's record: store it there), counted against `max_candidates` and considered
      for the Pareto front.
    - Work: told to the strategy, then `on_event({"type": "work", "phase", "proposal_id",
      "score", "wall_seconds", **meta})`; nothing else.
    - After every tell: `checkpoint(strategy.state_dict())`, then a "progress" event.
    - A result carries `meta["evaluator"]` (the evaluator's name) and, when its proposal had
      any, `meta["evaluator_options"]`: what rebuilds the evaluator that scored it.
    - `previous`: the record of an earlier, interrupted run of the same search, whose strategy
      was restored with `load_state_dict(state, previous)`. Its results open
      `outcome.results` (not passed to `on_result` again) and are reused, not evaluated, for
      proposals asked again with the same id and policy; it may hold results the checkpoint
      had not told yet.

    Every event is also kept in `outcome.events`."""
    if executor is None:
        if evaluator is None:
            raise SearchError("run_search needs an evaluator or an executor")
        executor = local_executor(evaluator)
    space = strategy.space
    resource = resource or (space.target.resource_key if space is not None else "flops")
    t0 = time.perf_counter()
    results: list[Result] = [r if isinstance(r, Result) else Result.from_dict(r) for r in (previous or [])]
    known = {r.proposal_id: r for r in results if r.kind == "candidate"}
    events: list[dict[str, Any]] = []
    stopped = capped = False
    idle = 0

    def event(kind: str, **data: Any) -> None:
        e = {**data, "type": kind}
        events.append(e)
        if on_event is not None:
            on_event(e)

    while not strategy.done:
        if should_stop is not None and should_stop():
            stopped = True
            event("stopped", candidates=len(results))
            break
        if max_candidates is not None and len(results) >= max_candidates:
            stopped = capped = True
            break
        proposals = strategy.ask(max(1, batch_size))
        if not proposals:
            idle += 1
            if idle > 3:
                raise SearchError(f"strategy {strategy.name!r} asked for nothing while not done")
            continue
        idle = 0
        reused = {
            p.id: known[p.id]
            for p in proposals
            if p.kind == "candidate" and p.id in known and _same_policy(known[p.id].policy, p.policy)
        }
        todo = [p for p in proposals if p.id not in reused]
        fresh = executor(todo) if todo else []
        by_id = {r.proposal_id: r for r in fresh}
        batch = []
        for p in proposals:
            if p.id in reused:
                batch.append(reused[p.id])
                continue
            r = by_id.get(p.id)
            if r is None:
                raise SearchError(f"the executor returned no result for proposal {p.id}")
            r.meta = {**p.meta, **r.meta}
            if p.evaluator_options:  # with meta["evaluator"], what rebuilds the evaluator that scored it
                r.meta.setdefault("evaluator_options", dict(p.evaluator_options))
            r.kind = p.kind
            batch.append(r)
            if p.kind != "candidate":
                continue
            results.append(r)
            known[r.proposal_id] = r
            if on_result is not None:
                on_result(r)
        strategy.tell(batch)
        for r in batch:
            if r.kind != "candidate":
                event(
                    "work",
                    **{
                        **r.meta,
                        "phase": r.phase,
                        "proposal_id": r.proposal_id,
                        "score": r.score,
                        "wall_seconds": r.wall_seconds,
                    },
                )
        if checkpoint is not None:
            checkpoint(strategy.state_dict())
        prog = strategy.progress()
        best = strategy.best
        if best is not None and space is not None and not space.meets(best):
            best = None  # a strategy's interim choice over the budget (NetAdapt, AutoSlim) is not a result yet
        event(
            "progress",
            fraction=float(prog.get("fraction", 0.0)),
            phase=str(prog.get("phase", strategy.name)),
            candidates=len(results),
            best=best,
            best_score=None if best is None else best.score,
        )
    front = pareto_front(results, resource)
    return SearchOutcome(
        best=strategy.best,
        results=results,
        pareto=front,
        seconds=time.perf_counter() - t0,
        stopped=stopped,
        capped=capped,
        resource=resource,
        events=events,
    )
