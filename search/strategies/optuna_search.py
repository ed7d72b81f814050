"""Optuna (Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework",
KDD 2019): per-group rates as a study in ask/tell mode, TPE (Bergstra et al. 2011) by default
or any Optuna sampler by name, with the target as a constraint through Optuna's constrained
sampling (`trial.set_constraint` on Optuna 5, `constraints_func` before it:
`resource / budget - 1 <= 0`). Policies that break the target are
told at once with score 0 and their constraint value, without being evaluated, so the sampler
learns where the feasible region is. The study may live in a SQL database (`storage` URL,
e.g. the service's), otherwise in memory.

Determinism: the sampler is re-seeded with `seed + ask number` before every ask, so a study
rebuilt on resume continues exactly as an uninterrupted one. Record and state: evaluated
trials are the search record's candidates (each proposal carries its ask number); the state
keeps only the asks that never became candidates (infeasible policies, told 0 unevaluated:
their ask numbers and rates, one row of floats each). An in-memory study is rebuilt from both,
trial by trial in ask order (proposals still outstanding as running trials), so its trials and
numbers are those of the uninterrupted study; a study in a database keeps its own trials."""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any

import optuna
import torch
from pydantic import Field

from pruning.registry import OneOf

from ..base import Count, Proposal, Result, SearchError, Steps
from ..registry import register_strategy
from ..space import SearchSpace
from .common import SpaceStrategy

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
CONSTRAINT_KEY = "constraint"
NATIVE_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5


def _constraint(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get(CONSTRAINT_KEY, [0.0]))


@register_strategy("optuna")
class OptunaStrategy(SpaceStrategy):
    """`n_trials` evaluated candidates (infeasible ones are not evaluated and do not count,
    up to `max_asks` in all); `sampler` is a name from SAMPLERS; `step` discretises rates."""

    name = "optuna"
    default_evaluator = "adaptive-bn"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        n_trials: Count = 30,
        sampler: Annotated[str, OneOf(SAMPLERS)] = "tpe",
        storage: str | None = None,
        study_name: Annotated[str, Field(max_length=200)] | None = None,
        step: Annotated[float, Field(gt=0, lt=1)] | None = None,
        max_asks: Count | None = None,
        n_startup_trials: Steps = 10,
    ) -> None:
        super().__init__(space, seed)
        if sampler not in SAMPLERS:  # for callers that build the class directly
            raise SearchError(f"unknown optuna sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        self.n_trials, self.sampler_name, self.step = int(n_trials), sampler, step
        self.n_startup_trials = int(n_startup_trials)
        self.max_asks = int(max_asks) if max_asks else 20 * self.n_trials
        self.storage, self.study_name = storage, study_name or f"secateurs-{space.target.kind}-{seed}"
        self.distributions: dict[str, optuna.distributions.BaseDistribution] = {
            k: optuna.distributions.FloatDistribution(lo, hi, step=step)
            for k, (lo, hi) in space.bounds.items()
            if hi > lo
        }
        self.fixed = {k: lo for k, (lo, hi) in space.bounds.items() if hi <= lo}
        optuna.logging.set_verbosity(logging.WARNING)
        self.study = optuna.create_study(
            direction="maximize",
            storage=storage,
            study_name=self.study_name,
            sampler=self._sampler(0),
            load_if_exists=storage is not None,
        )
        self.infeasible: list[tuple[int, dict[str, float]]] = []  # (ask number, rates): never candidates
        self.trial_of: dict[int, int] = {}
        self.evaluated: list[Result] = []
        self.asks = 0

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        cls = getattr(optuna.samplers, SAMPLERS[self.sampler_name])
        params = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {"seed": self.seed * 100003 + number}
        if "constraints_func" in params and not NATIVE_CONSTRAINTS:
            kwargs["constraints_func"] = _constraint
        if "n_startup_trials" in params:
            kwargs["n_startup_trials"] = self.n_startup_trials
        return cls(**kwargs)

    @staticmethod
    def _constrain(trial: optuna.trial.Trial, value: float) -> None:
        """Record the budget constraint where the sampler reads it."""
        trial.set_user_attr(CONSTRAINT_KEY, [value])
        if NATIVE_CONSTRAINTS:
            trial.set_constraint("budget", value)

    def _new_trial(self, params: dict[str, float] | None = None) -> optuna.trial.Trial:
        self.study.sampler = self._sampler(self.asks)
        if params is not None:
            self.study.enqueue_trial(params)
        return self.study.ask(self.distributions)

    def ask(self, n: int = 1) -> list[Proposal]:
        out = self._reissued(n)
        while (
            len(out) < n and len(self.evaluated) + len(self.outstanding) < self.n_trials and self.asks < self.max_asks
        ):
            trial = self._new_trial()
            self.asks += 1
            policy = {**self.fixed, **{k: float(v) for k, v in trial.params.items()}}
            c = self.space.resource(policy) / self.space.budget - 1.0
            self._constrain(trial, c)
            if c > 0:
                self.study.tell(trial, 0.0)
                self.infeasible.append((self.asks - 1, {k: float(v) for k, v in trial.params.items()}))
                continue
            p = self._propose(
                policy,
                "trial",
                trial=trial.number,
                ask=self.asks - 1,  # its trial's place in ask order
                constraint=c,
            )
            self.trial_of[p.id] = trial.number
            out.append(p)
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            number = self.trial_of.pop(r.proposal_id)
            self.study.tell(number, r.score)
            self.evaluated.append(r)

    @property
    def done(self) -> bool:
        return not self.outstanding and (len(self.evaluated) >= self.n_trials or self.asks >= self.max_asks)

    @property
    def best(self) -> Result | None:
        return self._best_of(self.evaluated)

    def progress(self) -> dict[str, Any]:
        infeasible = len(self.infeasible)
        return {
            "fraction": min(1.0, len(self.evaluated) / max(1, self.n_trials)),
            "phase": (
                f"Optuna {self.sampler_name}: {len(self.evaluated)}/{self.n_trials} trials "
                f"({infeasible} infeasible skipped)"
            ),
        }

    def _extra_state(self) -> dict[str, Any]:
        keys = list(self.distributions)
        return {
            "asks": self.asks,
            "infeasible_asks": torch.tensor([a for a, _ in self.infeasible], dtype=torch.int64),
            "infeasible_rates": torch.tensor(
                [[params[k] for k in keys] for _, params in self.infeasible], dtype=torch.float64
            ).reshape(len(self.infeasible), len(keys)),
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        keys = list(self.distributions)
        self.asks = int(state["asks"])
        self.infeasible = [
            (int(a), {k: float(v) for k, v in zip(keys, row.tolist(), strict=True)})
            for a, row in zip(state["infeasible_asks"].tolist(), state["infeasible_rates"], strict=True)
        ]
        self.evaluated = [r for r in self.history if r.phase == "trial"]
        self.trial_of = {}
        if self.storage is None or not self.study.trials:
            self._rebuild_study()
            return
        # a study in a database kept its trials: outstanding proposals keep theirs while still running
        running = {t.number for t in self.study.trials if t.state == optuna.trial.TrialState.RUNNING}
        for p in self._reissue:
            number = int(p.meta.get("trial", -1))
            if number not in running:
                trial = self._new_trial({k: v for k, v in p.policy.items() if k in self.distributions})
                self._constrain(trial, float(p.meta.get("constraint", 0.0)))
                number = trial.number
            self.trial_of[p.id] = number

    def _rebuild_study(self) -> None:
        """Add every ask's trial in ask order: infeasible ones (value 0), told candidates (their
        score) and outstanding proposals (running, told when their results come)."""
        running = optuna.trial.TrialState.RUNNING
        entries: dict[int, tuple[dict[str, float], float, float | None, int | None]] = {}
        for a, params in self.infeasible:
            entries[a] = (params, self.space.resource({**self.fixed, **params}) / self.space.budget - 1.0, 0.0, None)
        for r in self.evaluated:
            entries[int(r.meta["ask"])] = (r.policy, float(r.meta.get("constraint", 0.0)), float(r.score), None)
        for p in self._reissue:
            entries[int(p.meta["ask"])] = (p.policy, float(p.meta.get("constraint", 0.0)), None, p.id)
        if sorted(entries) != list(range(self.asks)):
            raise SearchError(f"optuna: the record and the state do not account for all {self.asks} asks")
        offset = len(self.study.trials)
        for a in range(self.asks):
            params, c, value, pid = entries[a]
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=running if value is None else optuna.trial.TrialState.COMPLETE,
                    value=value,
                    params={k: float(v) for k, v in params.items() if k in self.distributions},
                    distributions=self.distributions,
                    user_attrs={CONSTRAINT_KEY: [c]},
                    **(
                        {"constraints": {"budget": c}} if NATIVE_CONSTRAINTS else {"system_attrs": {"constraints": [c]}}
                    ),
                )
            )
            if pid is not None:
                self.trial_of[pid] = offset + a
