"""Optuna (Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework",
KDD 2019): per-group rates as a study in ask/tell mode, TPE (Bergstra et al. 2011) by default
or any Optuna sampler by name, with the target as a constraint through Optuna's constrained
sampling (`trial.set_constraint` on Optuna 5, `constraints_func` before it:
`resource / budget - 1 <= 0`). Policies that break the target are
told at once with score 0 and their constraint value, without being evaluated, so the sampler
learns where the feasible region is. The study may live in a SQL database (`storage` URL,
e.g. the service's), otherwise in memory.

Determinism: the sampler is re-seeded with `seed + trial number` before every ask, so a study
rebuilt from the state's history continues exactly as an uninterrupted one."""
from __future__ import annotations

import inspect
import logging
from typing import Any

import optuna

from ..base import Proposal, Result, SearchError
from ..registry import register_strategy
from ..space import SearchSpace
from .common import SpaceStrategy

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "nsgaii": "NSGAIISampler",
            "qmc": "QMCSampler", "gp": "GPSampler"}
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

    def __init__(self, space: SearchSpace, seed: int = 0, n_trials: int = 30, sampler: str = "tpe",
                 storage: str | None = None, study_name: str | None = None, step: float | None = None,
                 max_asks: int | None = None, n_startup_trials: int = 10) -> None:
        super().__init__(space, seed)
        if sampler not in SAMPLERS:
            raise SearchError(f"unknown optuna sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        self.n_trials, self.sampler_name, self.step = int(n_trials), sampler, step
        self.n_startup_trials = int(n_startup_trials)
        self.max_asks = int(max_asks) if max_asks else 20 * self.n_trials
        self.storage, self.study_name = storage, study_name or f"secateurs-{space.target.kind}-{seed}"
        self.distributions = {k: optuna.distributions.FloatDistribution(lo, hi, step=step)
                              for k, (lo, hi) in space.bounds.items() if hi > lo}
        self.fixed = {k: lo for k, (lo, hi) in space.bounds.items() if hi <= lo}
        optuna.logging.set_verbosity(logging.WARNING)
        self.study = optuna.create_study(direction="maximize", storage=storage, study_name=self.study_name,
                                         sampler=self._sampler(0), load_if_exists=storage is not None)
        self.trials: list[dict[str, Any]] = []
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
        while len(out) < n and len(self.evaluated) + len(self.outstanding) < self.n_trials and self.asks < self.max_asks:
            trial = self._new_trial()
            self.asks += 1
            policy = {**self.fixed, **{k: float(v) for k, v in trial.params.items()}}
            c = self.space.resource(policy) / self.space.budget - 1.0
            self._constrain(trial, c)
            if c > 0:
                self.study.tell(trial, 0.0)
                self.trials.append({"params": policy, "value": 0.0, "constraint": c})
                continue
            p = self._propose(policy, "trial", trial=trial.number, constraint=c)
            self.trial_of[p.id] = trial.number
            out.append(p)
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            number = self.trial_of.pop(r.proposal_id)
            self.study.tell(number, r.score)
            self.trials.append({"params": dict(r.policy), "value": r.score, "constraint": r.meta.get("constraint", 0.0)})
            self.evaluated.append(r)

    @property
    def done(self) -> bool:
        return not self.outstanding and (len(self.evaluated) >= self.n_trials or self.asks >= self.max_asks)

    @property
    def best(self) -> Result | None:
        return self._best_of(self.evaluated)

    def progress(self) -> dict[str, Any]:
        infeasible = sum(1 for t in self.trials if t["constraint"] > 0)
        return {"fraction": min(1.0, len(self.evaluated) / max(1, self.n_trials)),
                "phase": f"Optuna {self.sampler_name}: {len(self.evaluated)}/{self.n_trials} trials ({infeasible} infeasible skipped)"}

    def _extra_state(self) -> dict[str, Any]:
        return {"trials": [dict(t) for t in self.trials], "asks": self.asks}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.trials = [dict(t) for t in state["trials"]]
        self.asks = int(state["asks"])
        self.evaluated = [r for r in self.history if r.phase == "trial"]
        finished = [t for t in self.study.trials if t.state.is_finished()]
        if len(finished) < len(self.trials):  # in-memory study (or an emptied one): replay the history
            for t in self.trials[len(finished):]:
                params = {k: v for k, v in t["params"].items() if k in self.distributions}
                self.study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=self.distributions, value=float(t["value"]),
                    user_attrs={CONSTRAINT_KEY: [float(t["constraint"])]},
                    **({"constraints": {"budget": float(t["constraint"])}} if NATIVE_CONSTRAINTS
                       else {"system_attrs": {"constraints": [float(t["constraint"])]}})))
        self.trial_of = {}
        for p in self._reissue:
            trial = self._new_trial({k: v for k, v in p.policy.items() if k in self.distributions})
            self._constrain(trial, float(p.meta.get("constraint", 0.0)))
            self.trial_of[p.id] = trial.number
