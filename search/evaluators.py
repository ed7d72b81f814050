"""Evaluators turn a policy into a score, apart from the strategies that propose policies.

Each cuts the model with the job's criterion (from the search space's cached trace, by index
selection, when the context has a space), then scores the cut network on the validation split
by the job's task (`pruning.tasks`: accuracy for classification, fidelity for distillation, ...):
- `plain`: the validation score as cut (BN statistics inherited from the full network);
- `adaptive-bn`: EagleEye (Li et al. 2020): reset the BN statistics and re-estimate them on
  calibration batches from the training split, then validate;
- `finetune`: NetAdapt's short-term fine-tune (Yang et al. 2018): `steps` SGD iterations on
  the training split, then validate.
The learned strategies add theirs (AMC's `reconstruct`, MetaPruning's `pruningnet`, AutoSlim's
`shared-weights`) with `@register_evaluator("name")`; `EVALUATORS` names their modules and
imports them on its first lookup, so it is complete whichever module was imported first.

Every result's `meta["timing"]` splits its wall time into seconds per step: `cut`, `count`
(resources), `bn` (BN recalibration), `train` (fine-tune steps), `reconstruct` (AMC's least
squares) and `validate`, the steps the evaluator ran."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from pruning.bn import recalibrate_bn
from pruning.criteria import get_criterion
from pruning.cut import prune
from pruning.data import DataSplits
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.registry import Registry, check_values, given, signature_schema
from pruning.tasks import Task
from pruning.train import TrainConfig, default_task, evaluate, train

from .base import BatchSize, LearningRate, Proposal, Result, SearchError, Steps
from .space import SearchSpace


@dataclass
class EvalContext:
    """Everything an evaluator needs: the trained full model, the data, the input shape
    (C, H, W), the channel criterion, the device, calibration batches from the training
    split, and a seed. `space` (optional) supplies cached resource counts and latency;
    `val_batches` caps validation batches (None: the whole validation split, or the task's
    `search_images` bound); `task` reads
    the batches, gives the fine-tune loss and the score (None: classification)."""

    model: nn.Module
    data: DataSplits
    input_shape: tuple[int, ...]
    criterion: str = "l1"
    device: str | torch.device = "cpu"
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    seed: int = 0
    space: SearchSpace | None = None
    val_batches: int | None = None
    batch_size: int = 256
    extras: dict[str, Any] = field(default_factory=dict)
    task: Task | None = None

    def __post_init__(self) -> None:
        self.task = default_task(self.task)
        self.val_batches = self.task.candidate_batches(self.val_batches, self.batch_size)


class Evaluator:
    """Base class: `cut` the model for a policy, `score` the cut model; `evaluate` does both
    and fills a `Result` with the cut network's resources."""

    name = ""
    gives_cut_model: bool = True
    """True when the network `score` measures is the plain cut network (a final fine-tune can
    start from it); False for evaluators that score generated or shared weights."""

    def __init__(self, context: EvalContext, **options: Any) -> None:
        if options:
            raise SearchError(f"evaluator {self.name!r} takes no option(s) {', '.join(sorted(options))}")
        self.context = context
        self.timing: dict[str, float] = {}
        """Seconds per step of the last evaluation (see the module doc)."""

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the time spent in the block to `timing[step]`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timing[step] = self.timing.get(step, 0.0) + time.perf_counter() - t0

    def cut(self, policy: Mapping[str, float]) -> nn.Module:
        """The cut copy of the context's model for a policy (bounds applied when a space is known)."""
        ctx = self.context
        crit = get_criterion(ctx.criterion)
        calib = ctx.calibration if crit.needs_data else None
        if ctx.space is not None:
            return ctx.space.cut(policy, ctx.criterion, calib, model=ctx.model)
        return prune(ctx.model, dict(policy), crit, input_shape=ctx.input_shape, calibration=calib)

    def validate(self, model: nn.Module) -> float:
        """The task's validation score of a model (accuracy for classification)."""
        ctx = self.context
        with self.timed("validate"):
            return evaluate(model, ctx.data.val, batch_size=ctx.batch_size, max_batches=ctx.val_batches, task=ctx.task)

    def recalibrate(self, model: nn.Module) -> None:
        """Adaptive BN: re-estimate the model's BN statistics on the context's calibration batches."""
        with self.timed("bn"):
            recalibrate_bn(model, self.context.calibration or [])

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        """The score of a cut model (higher is better)."""
        raise NotImplementedError

    def resources(self, model: nn.Module, policy: Mapping[str, float]) -> dict[str, Any]:
        """FLOPs, params, memory and (table) latency of a cut model."""
        if self.context.space is not None:
            return self.context.space.resources(policy, model)
        shape = self.context.input_shape
        return {
            "flops": count_flops(model, shape),
            "params": count_params(model),
            "memory_bytes": peak_memory_bytes(model, shape),
            "latency_ms": None,
        }

    def _cut_and_score(self, policy: Mapping[str, float], phase: str) -> tuple[nn.Module, float, dict[str, Any]]:
        torch.manual_seed(self.context.seed)
        self.timing = {}
        t0 = time.perf_counter()
        model = self.cut(policy)
        self.timing["cut"] = time.perf_counter() - t0 - sum(self.timing.values())  # less steps timed inside
        with self.timed("count"):
            res = self.resources(model, policy)
        return model, float(self.score(model, policy, phase)), res

    def scored_model(self, policy: Mapping[str, float], phase: str = "search") -> tuple[nn.Module, float]:
        """The network `evaluate` scores for a policy, as it scored it (fine-tuned, reconstructed
        or BN-recalibrated: the same seed gives the same weights), and its score. Meaningful
        when `gives_cut_model` is True."""
        model, value, _ = self._cut_and_score(policy, phase)
        return model, value

    def evaluate(
        self,
        policy: Mapping[str, float],
        phase: str = "search",
        proposal_id: int = -1,
        meta: dict[str, Any] | None = None,
    ) -> Result:
        """Cut, score and count one policy."""
        t0 = time.perf_counter()
        _, value, res = self._cut_and_score(policy, phase)
        return Result(
            proposal_id=proposal_id,
            policy={k: float(v) for k, v in policy.items()},
            score=value,
            flops=int(res["flops"]),
            params=int(res["params"]),
            memory_bytes=int(res["memory_bytes"]),
            latency_ms=res.get("latency_ms"),
            phase=phase,
            wall_seconds=time.perf_counter() - t0,
            meta={**(meta or {}), "evaluator": self.name, "timing": {k: round(v, 6) for k, v in self.timing.items()}},
        )


EVALUATOR_MODULES = ("search.strategies.amc", "search.strategies.metapruning", "search.strategies.autoslim")
"""The modules that add an evaluator besides the built-ins below (each with its strategy)."""

EVALUATORS: Registry[Callable[..., Evaluator]] = Registry(
    "evaluator", error=SearchError, sort=True, modules=EVALUATOR_MODULES
)
"""Evaluator classes by name (each built as `cls(context, **options)`), sorted."""

register_evaluator = EVALUATORS.register
"""Make an evaluator available by name: `@register_evaluator("name")` on an `Evaluator` subclass."""


@register_evaluator("plain")
class PlainEvaluator(Evaluator):
    """The validation score of the cut model as it is."""

    name = "plain"

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        return self.validate(model)


@register_evaluator("adaptive-bn")
class AdaptiveBNEvaluator(Evaluator):
    """EagleEye's adaptive BN (Li et al. 2020): re-estimate BN statistics of the cut model on
    calibration batches from the training split (`pruning.bn.recalibrate_bn`), then validate."""

    name = "adaptive-bn"

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        if not self.context.calibration:
            raise SearchError("the adaptive-bn evaluator needs calibration batches from the training split")
        self.recalibrate(model)
        return self.validate(model)


@register_evaluator("finetune")
class FinetuneEvaluator(Evaluator):
    """NetAdapt's short-term fine-tune (Yang et al. 2018): `steps` SGD iterations on the
    training split at learning rate `lr` on the task's loss, then the validation score."""

    name = "finetune"

    def __init__(
        self,
        context: EvalContext,
        steps: Steps = 50,
        lr: LearningRate = 0.01,
        batch_size: BatchSize = 64,
        adaptive_bn: bool = True,
    ) -> None:
        super().__init__(context)
        self.steps, self.lr, self.batch_size, self.adaptive_bn = (
            int(steps),
            float(lr),
            int(batch_size),
            bool(adaptive_bn),
        )

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        ctx = self.context
        if self.adaptive_bn and ctx.calibration:
            self.recalibrate(model)
        if self.steps > 0:
            cfg = TrainConfig(epochs=1e9, lr=self.lr, batch_size=self.batch_size, seed=ctx.seed, max_steps=self.steps)
            with self.timed("train"):
                train(model, ctx.data.train, cfg, device=model_device(model), task=ctx.task)
        return self.validate(model)


def model_device(model: nn.Module) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


def list_evaluators() -> list[str]:
    """Names of every evaluator, sorted."""
    return EVALUATORS.names()


def evaluator_class(name: str) -> Callable[..., Evaluator]:
    """The class (factory) behind an evaluator name; an unknown name is a SearchError."""
    return EVALUATORS.get(name)


@functools.cache
def _options(cls: Callable[..., Evaluator]) -> type[BaseModel]:
    return signature_schema(cls, f"{getattr(cls, 'name', '')} options", skip=("context",))


def evaluator_options(name: str) -> type[BaseModel]:
    """The pydantic schema of an evaluator's options: its constructor's keyword parameters,
    their annotations (bounds included) and defaults (`pruning.registry.signature_schema`)."""
    return _options(evaluator_class(name))


def check_evaluator_options(name: str, options: Mapping[str, Any], json: bool = False) -> dict[str, Any]:
    """The given options, validated by the evaluator's schema (JSON-ready values with `json`);
    a SearchError names each bad or unknown option."""
    parsed = check_values(evaluator_options(name), options, f"evaluator {name!r}", "option", error=SearchError)
    return given(parsed, json=json)


def make_evaluator(name: str, context: EvalContext, **options: Any) -> Evaluator:
    """An evaluator by name, built on `context` with its options (checked first,
    `check_evaluator_options`)."""
    cls = evaluator_class(name)
    checked = check_evaluator_options(name, options)
    try:
        return cls(context, **checked)
    except TypeError as exc:
        raise SearchError(f"bad option for evaluator {name!r}: {exc}") from exc


class EvaluatorPool:
    """The job's default evaluator plus any others proposals ask for by name (built on the same
    context, with the proposal's `evaluator_options`)."""

    def __init__(self, default: Evaluator) -> None:
        self.default = default
        self._others: dict[str, Evaluator] = {}

    def for_proposal(self, proposal: Proposal) -> Evaluator:
        """The evaluator a proposal asks for: the default when it names none (or the default's
        name) without options, else one built by name with its options (cached per both)."""
        name, opts = proposal.evaluator or self.default.name, dict(proposal.evaluator_options or {})
        if name == self.default.name and not opts:
            return self.default
        key = name + repr(sorted(opts.items()))
        if key not in self._others:
            self._others[key] = make_evaluator(name, self.default.context, **opts)
        return self._others[key]

    def evaluate(self, proposal: Proposal) -> Result:
        """Evaluate one proposal with the evaluator it asks for; the result takes its kind."""
        result = self.for_proposal(proposal).evaluate(proposal.policy, proposal.phase, proposal.id, dict(proposal.meta))
        result.kind = proposal.kind
        return result
