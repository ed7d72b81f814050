"""The job configuration `run_pipeline` reads: plain dicts in, documented dataclasses with
defaults out, so `{"model": {"zoo": "convnet"}, "data": {"name": "digits"},
"target": {"flops": 0.5}, "strategy": {"name": "uniform"}}` is a complete job."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import SearchError
from .target import Target


def _section(cls: type, data: Any, where: str) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with one clear line."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise SearchError(f"config section {where!r} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SearchError(f"unknown key(s) in config section {where!r}: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    return cls(**dict(data))


@dataclass
class ModelConfig:
    """`zoo`: a `pruning.models` name; `weights`: a safetensors / weights-only .pt file of the
    trained model (None: train it first); `args`: extra zoo arguments such as `width`."""

    zoo: str = "resnet20"
    weights: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """`name`: a `pruning.data.load_dataset` spec (`digits`, `fashion-mnist`, `cifar10:PATH`,
    ...); `input_size` in pixels (None: the set's default); `subset`: training images kept."""

    name: str = "digits"
    input_size: int | None = None
    subset: int | None = None
    seed: int = 0


@dataclass
class TrainSection:
    """Training (of a model given without weights) or the final fine-tune: epochs may be
    fractional; `kd_alpha` > 0 distils from the unpruned model during the fine-tune."""

    epochs: float = 2.0
    lr: float = 0.05
    batch_size: int = 64
    kd_alpha: float = 0.0


@dataclass
class StrategyConfig:
    """`name`: a registry strategy; `options`: its keyword options."""

    name: str = "uniform"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluatorConfig:
    """`name`: an evaluator (None: the strategy's default); `options`: its keyword options."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpaceConfig:
    """Per-group bounds of the search (see `search.space.SearchSpace`)."""

    min_channels: int = 1
    max_rate: float = 0.9
    prune_stem: bool = False
    pinned: Any = None
    round_to: int = 1


@dataclass
class SearchSection:
    """Runner settings: proposals per ask, a cap on candidates, validation batches per
    evaluation (None: the whole split), calibration batches for adaptive BN / criteria."""

    batch_size: int = 1
    max_candidates: int | None = None
    val_batches: int | None = None
    calibration_batches: int = 4
    calibration_batch_size: int = 64


@dataclass
class PipelineConfig:
    """A whole search job. `target` is `{"flops": 0.5}`, `"flops=0.5"` or a Target."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    target: Target = field(default_factory=lambda: Target("flops", 0.5))
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    criterion: str = "l1"
    train: TrainSection = field(default_factory=TrainSection)
    finetune: TrainSection = field(default_factory=lambda: TrainSection(epochs=1.0, lr=0.01))
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchSection = field(default_factory=SearchSection)
    seed: int = 0
    device: str = "auto"
    onnx: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PipelineConfig":
        """Read a job from plain data; strings are accepted for `strategy` and `evaluator`
        (their names), extra keys of `strategy` other than `name` become its options."""
        if isinstance(d, PipelineConfig):
            return d
        if not isinstance(d, Mapping):
            raise SearchError("the job config must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SearchError(f"unknown key(s) in the job config: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        strat = d.get("strategy") or {}
        if isinstance(strat, str):
            strat = {"name": strat}
        strat = dict(strat)
        strat_opts = {**strat.pop("options", {}), **{k: v for k, v in strat.items() if k != "name"}}
        ev = d.get("evaluator") or {}
        if isinstance(ev, str):
            ev = {"name": ev}
        model = d.get("model") or {}
        if isinstance(model, str):
            model = {"zoo": model}
        data = d.get("data") or {}
        if isinstance(data, str):
            data = {"name": data}
        return cls(
            model=_section(ModelConfig, model, "model"), data=_section(DataConfig, data, "data"),
            target=Target.from_value(d.get("target", {"flops": 0.5})),
            strategy=StrategyConfig(name=str(strat.get("name", "uniform")), options=strat_opts),
            evaluator=_section(EvaluatorConfig, ev, "evaluator"), criterion=str(d.get("criterion", "l1")),
            train=_section(TrainSection, d.get("train"), "train"),
            finetune=_section(TrainSection, d.get("finetune"), "finetune") if d.get("finetune") is not None
            else TrainSection(epochs=1.0, lr=0.01),
            space=_section(SpaceConfig, d.get("space"), "space"), search=_section(SearchSection, d.get("search"), "search"),
            seed=int(d.get("seed", 0)), device=str(d.get("device", "auto")), onnx=bool(d.get("onnx", True)),
            meta=dict(d.get("meta") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data (round-trips through `from_dict`)."""
        out = dataclasses.asdict(self)
        out["target"] = self.target.as_dict()
        return out
