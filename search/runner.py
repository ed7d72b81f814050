"""The local search loop: ask → evaluate → tell until the strategy is done or asked to stop.

It records every candidate, keeps the Pareto front (resource against score), reports each
result and progress, checkpoints the strategy after every tell, and on resume reuses results
already evaluated (matched by proposal id and policy) instead of evaluating them again.
Evaluation is delegated to `executor(proposals) -> results`; the workers layer passes one
that fans out to Ray actors, the default evaluates in turn here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .base import Proposal, Result, SearchError, Strategy
from .evaluators import Evaluator, EvaluatorPool

Executor = Callable[[list[Proposal]], list[Result]]


@dataclass
class SearchOutcome:
    """What a search produced: the chosen result, every candidate in order, the Pareto front,
    wall time and whether it was stopped before the strategy finished."""

    best: Result | None
    results: list[Result]
    pareto: list[Result]
    seconds: float
    stopped: bool = False
    resource: str = "flops"
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def candidates_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


def pareto_front(results: Iterable[Result], resource: str = "flops") -> list[Result]:
    """Results no other result beats on both score (higher) and resource (lower), by resource."""
    pts = sorted((r for r in results if getattr(r, resource, None) is not None),
                 key=lambda r: (getattr(r, resource), -r.score))
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


def run_search(strategy: Strategy, evaluator: Evaluator | None, executor: Executor | None = None, batch_size: int = 1,
               on_result: Callable[[Result], None] | None = None, on_event: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, checkpoint: Callable[[dict], None] | None = None,
               previous: Sequence[Result] | None = None, resource: str | None = None,
               max_candidates: int | None = None) -> SearchOutcome:
    """Run `strategy` to completion (or until `should_stop()`), evaluating its proposals with
    `executor` (default: `evaluator` in this process). `previous` holds results of an earlier,
    interrupted run of the same search (its strategy restored with `load_state_dict`): they
    are kept in the record and not evaluated again."""
    if executor is None:
        if evaluator is None:
            raise SearchError("run_search needs an evaluator or an executor")
        executor = local_executor(evaluator)
    space = getattr(strategy, "space", None)
    resource = resource or (space.target.resource_key if space is not None else "flops")
    t0 = time.perf_counter()
    results: list[Result] = list(previous or [])
    known = {r.proposal_id: r for r in results}
    stopped = False
    idle = 0

    def event(kind: str, **data: Any) -> None:
        if on_event is not None:
            on_event({"type": kind, **data})

    while not strategy.done:
        if should_stop is not None and should_stop():
            stopped = True
            event("stopped", candidates=len(results))
            break
        if max_candidates is not None and len(results) >= max_candidates:
            stopped = True
            break
        proposals = strategy.ask(max(1, batch_size))
        if not proposals:
            idle += 1
            if idle > 3:
                raise SearchError(f"strategy {strategy.name!r} asked for nothing while not done")
            continue
        idle = 0
        reused = {p.id: known[p.id] for p in proposals if p.id in known and _same_policy(known[p.id].policy, p.policy)}
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
            results.append(r)
            known[r.proposal_id] = r
            batch.append(r)
            if on_result is not None:
                on_result(r)
        strategy.tell(batch)
        if checkpoint is not None:
            checkpoint(strategy.state_dict())
        prog = strategy.progress()
        best = strategy.best
        event("progress", fraction=float(prog.get("fraction", 0.0)), phase=str(prog.get("phase", strategy.name)),
              candidates=len(results), best_score=None if best is None else best.score)
    front = pareto_front(results, resource)
    return SearchOutcome(best=strategy.best, results=results, pareto=front, seconds=time.perf_counter() - t0,
                         stopped=stopped, resource=resource)
