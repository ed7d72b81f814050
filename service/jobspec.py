"""The job spec a user submits (pydantic): the pipeline config's fields with documented
defaults, so the minimal body `{"model": {"zoo": "convnet"}, "data": {"name": "digits"},
"target": {"flops": 0.5}, "strategy": {"name": "uniform"}}` is complete. `to_config`
resolves it into the plain dict `search.pipeline.run_pipeline` takes (an uploaded model id
becomes its zoo name, arguments and stored weights path)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pruning.data import DATASETS
from search.base import SearchError
from search.target import KINDS, Target


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Spec):
    """Either a zoo model (trained on the data first when it has no weights) or an uploaded one."""

    zoo: str | None = Field(None, description="zoo architecture, e.g. convnet, resnet20; trained on the data first")
    args: dict[str, Any] = Field(default_factory=dict, description="zoo arguments (width, ...); num_classes/in_channels come from the data")
    upload: int | None = Field(None, description="id of a model uploaded with POST /v1/models")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.zoo is None) == (self.upload is None):
            raise ValueError("give exactly one of zoo (train it first) or upload (an uploaded model's id)")
        if self.zoo is not None:
            from pruning.models import list_models

            if self.zoo not in list_models():
                raise ValueError(f"unknown zoo model {self.zoo!r}; choose one of: {', '.join(list_models())}")
        return self


class DataSpec(_Spec):
    """A data set the cluster can read: digits, fashion-mnist, synthetic, or cifar10/imagefolder at a path."""

    name: Literal[DATASETS] = Field(..., description=f"one of {', '.join(DATASETS)}")  # type: ignore[valid-type]
    path: str | None = Field(None, description="folder for cifar10/imagefolder; must lie under SECATEURS_ALLOWED_DATA_ROOTS")
    input_size: int | None = Field(None, ge=8, le=1024, description="images are resized to this (default: the pipeline's per-set default)")
    subset: int | None = Field(None, gt=0, description="use at most this many training images")

    @model_validator(mode="after")
    def _path_rule(self) -> "DataSpec":
        if self.name in ("cifar10", "imagefolder") and not self.path:
            raise ValueError(f"data set {self.name} needs a path")
        if self.name not in ("cifar10", "imagefolder") and self.path:
            raise ValueError(f"data set {self.name} takes no path")
        return self


class NamedSpec(_Spec):
    """A component chosen by name with free-form options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class EvaluatorSpec(_Spec):
    """How candidates are scored: an evaluator name (None: the strategy's default) and options."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class TrainSpec(_Spec):
    """Training of a zoo model given without weights, or the final fine-tune (epochs may be
    fractional; `kd_alpha` > 0 distils from the unpruned model)."""

    epochs: float = Field(2.0, ge=0, le=1000)
    lr: float = Field(0.05, gt=0, le=10)
    batch_size: int = Field(64, ge=1, le=4096)
    kd_alpha: float = Field(0.0, ge=0, le=1)


class SpaceSpec(_Spec):
    """Per-group bounds of the search (`search.space.SearchSpace`)."""

    min_channels: int = Field(1, ge=1)
    max_rate: float = Field(0.9, ge=0, lt=1)
    prune_stem: bool = False
    pinned: dict[str, float] | list[str] | None = None
    round_to: int = Field(1, ge=1)


class SearchSpec(_Spec):
    """Runner settings: proposals per ask (fanned out to the Ray workers), a cap on candidates,
    validation batches per evaluation, calibration batches for adaptive BN and data criteria."""

    batch_size: int = Field(2, ge=1, le=256)
    max_candidates: int | None = Field(None, ge=1)
    val_batches: int | None = Field(None, ge=1)
    calibration_batches: int = Field(4, ge=1, le=1000)
    calibration_batch_size: int = Field(64, ge=1, le=4096)


def _target(value: Any) -> dict[str, Any]:
    """Validate a target: `{"flops": 0.5}` (a ratio in (0, 1]), `"params=120k"`, or
    `{"kind": ..., "value": ..., "absolute": bool}`."""
    if isinstance(value, dict) and "kind" not in value:
        keys = [k for k in value if k in KINDS]
        if len(value) != 1 or len(keys) != 1:
            raise ValueError(f"needs exactly one of {', '.join(KINDS)}, e.g. {{\"flops\": 0.5}}")
        v = value[keys[0]]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            if not isinstance(v, str):
                raise ValueError(f"{keys[0]} must be a number (a ratio) or a string like '120k'")
        elif not 0 < v <= 1:
            raise ValueError(f"{keys[0]} ratio must be in (0, 1], got {v}; for an absolute budget use "
                             f"{{\"kind\": \"{keys[0]}\", \"value\": {v}, \"absolute\": true}}")
    try:
        return Target.from_value(value).as_dict()
    except (SearchError, TypeError, KeyError) as exc:
        raise ValueError(str(exc)) from exc


class JobSpec(_Spec):
    """A compression job. Every field but model, data, target and strategy has a default."""

    model: ModelSpec
    data: DataSpec
    target: dict[str, Any] = Field(..., description='{"flops": 0.5} (ratio), "params=120k", or {"kind","value","absolute"}')
    strategy: NamedSpec = Field(..., description="search strategy by name (GET /v1/strategies) and its options")
    criterion: str = Field("l1", description="channel importance criterion (pruning.criteria)")
    evaluator: EvaluatorSpec = Field(default_factory=EvaluatorSpec, description="how candidates are scored")
    finetune: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=1.0, lr=0.01), description="final fine-tune of the chosen network")
    train: TrainSpec = Field(default_factory=TrainSpec, description="training of a zoo model given without weights")
    space: SpaceSpec = Field(default_factory=SpaceSpec, description="search-space bounds")
    search: SearchSpec = Field(default_factory=SearchSpec, description="runner settings")
    seed: int = Field(0, ge=0)
    priority: int = Field(0, ge=-100, le=100, description="higher runs first; ties by age")

    @field_validator("target", mode="before")
    @classmethod
    def _valid_target(cls, v: Any) -> dict[str, Any]:
        return _target(v)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: NamedSpec) -> NamedSpec:
        from search.registry import list_strategies, strategy_class

        names = list_strategies()
        if v.name not in names:
            raise ValueError(f"unknown strategy {v.name!r}; choose one of: {', '.join(names)}")
        try:
            _check_options(strategy_class(v.name), v.options, f"strategy {v.name!r}", skip=("space", "seed"))
        except SearchError as exc:
            raise ValueError(str(exc)) from exc
        return v

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, v: EvaluatorSpec) -> EvaluatorSpec:
        if v.name is None:
            return v
        from search import evaluators

        if v.name not in evaluators.list_evaluators():
            raise ValueError(f"unknown evaluator {v.name!r}; choose one of: {', '.join(evaluators.list_evaluators())}")
        _check_options(evaluators.evaluator_class(v.name), v.options, f"evaluator {v.name!r}", skip=("context",))
        return v

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v: str) -> str:
        from pruning.criteria import CRITERIA

        if v not in CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; choose one of: {', '.join(sorted(CRITERIA))}")
        return v


def _check_options(factory: Any, options: dict[str, Any], what: str, skip: tuple[str, ...] = ()) -> None:
    """Refuse option names the factory's constructor does not take (unless it takes **kwargs)."""
    import inspect

    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - (set(params) - set(skip)))
    if unknown:
        known = sorted(k for k in params if k not in skip and k not in ("self", "context"))
        raise ValueError(f"{what} takes no option(s) {', '.join(unknown)}; it takes: {', '.join(known) or 'none'}")


def check_data_path(path: str, roots: list[Path]) -> Path:
    """Resolve a data path and require it to exist under one of the allowed roots."""
    p = Path(path).expanduser().resolve()
    if not any(p == r.resolve() or r.resolve() in p.parents for r in roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured (SECATEURS_ALLOWED_DATA_ROOTS)"
        raise ValueError(f"data.path {path} is outside the allowed data roots ({allowed})")
    if not p.exists():
        raise ValueError(f"data.path {path} does not exist")
    return p
