"""One record of a search: the strategy's state holds only its own state (bounded as candidates
grow), the told results come back from the caller's record on resume, a record that ran ahead
of the last checkpoint is reused without evaluating anything twice, and work (not candidates)
stays out of the record. A fake executor (a score from the policy, resources from a linear
model of the space) keeps long searches fast."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from pruning import build_model
from search.base import Proposal, Result, SearchError
from search.evaluators import EvalContext, EvaluatorPool, make_evaluator
from search.registry import make_strategy, strategy_class
from search.runner import run_search
from search.space import SearchSpace
from search.strategies.base import Strategy
from search.strategies.common import SpaceStrategy

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """A convnet's space with resources from a linear model (cheap, monotone in every rate)."""
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    space = SearchSpace(model, SHAPE, "flops=0.5")
    orig = dict(space.original)
    share = 1.0 / len(space.groups)

    def count(kept, cut=None) -> dict[str, Any]:
        frac = sum(share * kept[g.key] / g.channels for g in space.groups)
        return {
            "flops": int(orig["flops"] * frac),
            "params": int(orig["params"] * frac),
            "memory_bytes": int(orig["memory_bytes"] * frac),
            "latency_ms": None,
        }

    space.count = count
    return space


def fake_executor(space: SearchSpace, calls: list[int] | None = None):
    def run(proposals: list[Proposal]) -> list[Result]:
        out = []
        for p in proposals:
            if calls is not None:
                calls.append(p.id)
            res = space.resources(p.policy)
            score = 1.0 - sum((v - 0.3) ** 2 for v in p.policy.values()) / max(1, len(p.policy))
            if p.phase == "finetune":
                score += 0.01
            out.append(
                Result(
                    p.id,
                    dict(p.policy),
                    score,
                    flops=int(res["flops"]),
                    params=int(res["params"]),
                    memory_bytes=int(res["memory_bytes"]),
                    phase=p.phase,
                    meta={**p.meta, "evaluator": "fake"},
                )
            )
        return out

    return run


def _size(state: dict) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


LONG = {
    "eagleeye": {"n_samples": 60, "top_k": 2, "tolerance": 0.05},
    "optuna": {"n_trials": 60, "n_startup_trials": 5},
    "amc": {"episodes": 60, "warmup": 5, "hidden": 16, "batch_size": 8, "buffer_size": 24, "evaluator": None},
}


@pytest.mark.parametrize("name", ["eagleeye", "amc"])
def test_state_size_stays_bounded_as_candidates_grow(space, name: str) -> None:
    sizes: list[int] = []
    states: list[dict] = []

    def checkpoint(state: dict) -> None:
        sizes.append(_size(state))
        states.append(state)

    out = run_search(
        make_strategy(name, space, seed=0, **LONG[name]), None, executor=fake_executor(space), checkpoint=checkpoint
    )
    assert len(out.results) >= 60
    assert len(sizes) == len(out.results)
    assert "history" not in states[-1]
    assert states[-1]["told"] == len(out.results)
    assert abs(sizes[59] - sizes[9]) < 64, sizes  # a few bytes of counters, not a result per candidate


def test_optuna_state_grows_only_with_infeasible_asks(space) -> None:
    sizes: list[int] = []
    strategy = make_strategy("optuna", space, seed=0, **LONG["optuna"])
    infeasible: list[int] = []

    def checkpoint(state: dict) -> None:
        sizes.append(_size(state))
        infeasible.append(len(strategy.infeasible))

    run_search(strategy, None, executor=fake_executor(space), checkpoint=checkpoint)
    per_row = 8 * (len(space.keys) + 1)  # one float per rate and the ask number
    assert sizes[59] - sizes[9] <= per_row * (infeasible[59] - infeasible[9]) + 64


RESUME = {
    "eagleeye": {"n_samples": 12, "top_k": 3, "tolerance": 0.05},
    "optuna": {"n_trials": 14, "n_startup_trials": 4},
    "netadapt": {"iterations": 3},
    "sensitivity": {"rates": [0.3, 0.6, 0.9]},
    "amc": {"episodes": 10, "warmup": 3, "hidden": 16, "batch_size": 4, "evaluator": None},
}


def _trace(outcome) -> list[tuple]:
    return [(r.proposal_id, r.phase, tuple(sorted(r.policy.items())), r.score) for r in outcome.results]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", list(RESUME))
def test_resume_from_state_and_record_is_exact(space, name: str, batch: int) -> None:
    """Interrupted after k candidates; resumed from the last checkpoint with the record, and
    from the one before it with a record that ran ahead (results stored, never told): both end
    exactly like the uninterrupted search, and nothing is evaluated twice."""
    full = run_search(
        make_strategy(name, space, seed=2, **RESUME[name]), None, executor=fake_executor(space), batch_size=batch
    )
    reference = _trace(full)
    stop_at = max(2, len(reference) // 2)
    saved: list[dict] = []
    done: list[int] = []
    part = run_search(
        make_strategy(name, space, seed=2, **RESUME[name]),
        None,
        executor=fake_executor(space, done),
        batch_size=batch,
        checkpoint=lambda state: saved.append(_roundtrip(state)),  # serialised when taken
        should_stop=lambda: len(done) >= stop_at,
    )
    assert part.stopped
    assert len(part.results) < len(reference)
    cases = [(saved[-1], 0)]
    if len(saved) >= 2:
        cases.append((saved[-2], len(part.results) - saved[-2]["told"]))
    for state, ahead in cases:
        resumed = make_strategy(name, space, seed=2, **RESUME[name])
        resumed.load_state_dict(state, list(part.results))
        calls: list[int] = []
        rest = run_search(resumed, None, executor=fake_executor(space, calls), batch_size=batch, previous=part.results)
        assert _trace(rest) == reference
        assert rest.best.proposal_id == full.best.proposal_id
        assert rest.best.score == full.best.score
        assert not set(calls) & {r.proposal_id for r in part.results}  # the record is reused, never re-evaluated
        assert len(calls) == len(reference) - len(part.results)
        if ahead:
            assert resumed.state_dict()["told"] == len(reference)


def test_record_missing_told_results_is_refused(space) -> None:
    strategy = make_strategy("eagleeye", space, seed=0, n_samples=4, top_k=0, tolerance=0.05)
    out = run_search(strategy, None, executor=fake_executor(space))
    fresh = make_strategy("eagleeye", space, seed=0, n_samples=4, top_k=0, tolerance=0.05)
    with pytest.raises(SearchError, match="record holds 3 of the 4"):
        fresh.load_state_dict(strategy.state_dict(), out.results[1:])
    # the record may come as stored dicts, in any order, with results of other jobs' ids beyond next_id
    extra = Result(99, {}, 0.0)
    fresh.load_state_dict(strategy.state_dict(), [r.as_dict() for r in reversed(out.results)] + [extra])
    assert [r.proposal_id for r in fresh.history] == [0, 1, 2, 3]
    assert fresh.done


def test_optuna_rebuilds_outstanding_trials_in_ask_order(space) -> None:
    """A checkpoint taken with asked, untold trials (a batch half told): the rebuilt in-memory
    study has them running at their original numbers, and the search continues exactly."""
    opts = {"n_trials": 10, "n_startup_trials": 3}
    ex = fake_executor(space)

    def drive(strategy, record: list[Result], pending: list[Proposal]) -> None:
        for r in ex(pending):
            record.append(r)
            strategy.tell([r])
        while not strategy.done:
            for r in ex(strategy.ask(1)):
                record.append(r)
                strategy.tell([r])

    ref = make_strategy("optuna", space, seed=4, **opts)
    ref_record: list[Result] = []
    drive(ref, ref_record, [])
    head = make_strategy("optuna", space, seed=4, **opts)
    record: list[Result] = []
    for _ in range(2):
        drive_one = ex(head.ask(1))
        record += drive_one
        head.tell(drive_one)
    batch = head.ask(3)
    first = ex(batch[:1])
    record += first
    head.tell(first)
    state = _roundtrip(head.state_dict())
    record += ex(batch[1:2])  # stored before the crash, never told
    assert len(state["outstanding"]) == 2

    resumed = make_strategy("optuna", space, seed=4, **opts)
    resumed.load_state_dict(state, record)
    assert [t.number for t in resumed.study.trials] == [t.number for t in head.study.trials]
    assert [t.state for t in resumed.study.trials] == [t.state for t in head.study.trials]
    again = resumed.ask(2)
    assert [(p.id, p.policy) for p in again] == [(p.id, p.policy) for p in batch[1:]]
    tail: list[Result] = []
    drive(resumed, tail, again)

    ref2 = make_strategy("optuna", space, seed=4, **opts)
    ref2_record: list[Result] = []
    for _ in range(2):
        one = ex(ref2.ask(1))
        ref2_record += one
        ref2.tell(one)
    b2 = ref2.ask(3)
    one = ex(b2[:1])
    ref2_record += one
    ref2.tell(one)
    drive(ref2, ref2_record, b2[1:])
    expected = [(r.proposal_id, r.policy) for r in ref2_record]
    got = [(r.proposal_id, r.policy) for r in record[:3] + tail]
    assert got == expected
    assert resumed.best.proposal_id == ref2.best.proposal_id


class WorkThenCandidates(SpaceStrategy):
    """Two work steps, then two candidates (a stand-in for MetaPruning's shape)."""

    name = "work-test"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        super().__init__(space, seed)
        self.worked = 0
        self.asked = 0

    def ask(self, n: int = 1) -> list[Proposal]:
        again = self._reissued(n)
        if again or self.outstanding:
            return again
        if self.worked < 2:
            return [self._propose({}, "train", kind="work", step=self.worked + 1)]
        out = []
        while self.asked < 2 and len(out) < n:
            self.asked += 1
            out.append(self._propose(dict.fromkeys(self.space.keys, 0.5), "search", n=self.asked))
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            if r.kind == "work":
                self.worked += 1

    @property
    def done(self) -> bool:
        return self.asked >= 2 and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self._best_of(self.history)

    def _extra_state(self) -> dict[str, Any]:
        return {"worked": self.worked, "asked": self.asked}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.worked, self.asked = int(state["worked"]), int(state["asked"])


def test_work_is_told_and_reported_but_never_recorded(space) -> None:
    events: list[dict] = []
    recorded: list[Result] = []
    strategy = WorkThenCandidates(space)
    out = run_search(
        strategy,
        None,
        executor=fake_executor(space),
        on_event=events.append,
        on_result=recorded.append,
        max_candidates=1,
    )
    assert out.stopped
    assert [r.proposal_id for r in out.results] == [2]
    assert recorded == out.results
    work = [e for e in events if e["type"] == "work"]
    assert [(e["phase"], e["step"], e["proposal_id"]) for e in work] == [("train", 1, 0), ("train", 2, 1)]
    assert all(r.kind == "candidate" for r in out.results)
    assert out.pareto == out.results
    assert strategy.state_dict()["told"] == 1
    resumed = WorkThenCandidates(space)
    resumed.load_state_dict(strategy.state_dict(), out.results)  # work is not in the record
    assert resumed.worked == 2
    rest = run_search(resumed, None, executor=fake_executor(space), previous=out.results)
    assert [r.proposal_id for r in rest.results] == [2, 3]


def test_declared_capabilities_and_typed_evaluator_options(space, digits) -> None:
    assert Strategy.default_evaluator == "adaptive-bn"
    assert strategy_class("netadapt").default_evaluator == "finetune"
    assert strategy_class("eagleeye").base_model({}, "convnet", {}) is None
    assert strategy_class("autoslim").base_model.__func__ is not Strategy.base_model.__func__
    uniform = make_strategy("uniform", space)
    assert uniform.write_artifacts(".") == {}
    assert uniform.space is space
    uniform.close()
    # EagleEye's fine-tunes carry their evaluator's options as a field, used by the pool
    ee = make_strategy("eagleeye", space, n_samples=1, top_k=1, finetune_steps=2, finetune_lr=0.05, tolerance=0.05)
    sample = ee.ask(1)
    ee.tell(fake_executor(space)(sample))
    (ft,) = ee.ask(1)
    assert ft.evaluator == "finetune"
    assert ft.evaluator_options == {"steps": 2, "lr": 0.05}
    assert "evaluator_options" not in ft.meta
    ctx = EvalContext(space.model, digits, SHAPE, space=space, val_batches=1)
    pool = EvaluatorPool(make_evaluator("plain", ctx))
    chosen = pool.for_proposal(ft)
    assert chosen.name == "finetune"
    assert (chosen.steps, chosen.lr) == (2, 0.05)
    assert pool.for_proposal(sample[0]) is pool.default
    assert pool.for_proposal(Proposal(9, {}, evaluator="plain", evaluator_options={})) is pool.default
    work = Proposal(9, {}, kind="work")
    assert pool.evaluate(work).kind == "work"
    # the runner leaves the options on the result, next to meta["evaluator"]
    out = run_search(
        make_strategy("eagleeye", space, n_samples=2, top_k=1, finetune_steps=2, tolerance=0.05),
        None,
        executor=fake_executor(space),
    )
    assert [r.meta.get("evaluator_options") for r in out.results] == [None, None, {"steps": 2, "lr": 0.01}]
