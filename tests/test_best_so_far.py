"""The best result a running job shows is the strategy's own choice and always meets the
target: never the unpruned network or an interim step over the budget."""

from __future__ import annotations

from pruning.models import build_model
from search.base import Proposal, Result
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace
from workers.pipeline import search_events
from workers.sink import JobSink


class Shown(JobSink):
    def __init__(self) -> None:
        self.shown: list[Result] = []

    def best(self, result: Result | None) -> None:
        assert result is not None
        self.shown.append(result)


def _executor(space: SearchSpace):
    """Scores a network by its size: the bigger (the less cut), the better, as accuracy tends to be."""

    def run(proposals: list[Proposal]) -> list[Result]:
        out = []
        for p in proposals:
            res = space.resources(p.policy)
            out.append(
                Result(
                    p.id,
                    dict(p.policy),
                    score=res["flops"] / space.original["flops"],
                    flops=int(res["flops"]),
                    params=int(res["params"]),
                    memory_bytes=int(res["memory_bytes"]),
                    phase=p.phase,
                )
            )
        return out

    return run


def test_interim_choices_over_the_budget_are_never_shown() -> None:
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    space = SearchSpace(model, (1, 16, 16), "flops=0.4")
    for name, options in [("netadapt", {"iterations": 4}), ("sensitivity", {"rates": [0.3, 0.6]})]:
        strategy = make_strategy(name, space, seed=0, **options)
        sink = Shown()
        outcome = run_search(strategy, None, executor=_executor(space), batch_size=2, on_event=search_events(sink))
        over = [r for r in outcome.results if r.flops > space.budget]
        assert over, name  # the search did evaluate networks over the budget (with higher scores)...
        assert max(r.score for r in over) > outcome.best.score
        assert sink.shown, name
        assert all(r.flops <= space.budget for r in sink.shown), name  # ...but never showed one as its best
        assert sink.shown[-1].proposal_id == outcome.best.proposal_id
