"""The job configuration: one pydantic model that the REST body (`POST /v1/jobs`), the CLI's
flags (`secateurs search`, generated from it in `secateurs.jobflags`), the pipeline
(`workers.pipeline.run_pipeline`) and the stored job all use. Every default lives here once.

The minimal job is `{"model": {"zoo": "convnet"}, "data": {"name": "digits"},
"target": {"flops": 0.5}, "strategy": {"name": "uniform"}}`."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pruning.data import DATASETS
from pruning.models.zoo import InputSize
from pruning.quantize import Calibration
from pruning.registry import OneOf
from pruning.runtime import Runtime, unavailable
from pruning.tasks import DEFAULT_TASK, list_tasks
from pruning.train import FinetuneConfig, Schedule, TrainConfig
from search.base import SearchError
from search.latency import check_table_runtime
from search.space import SearchSpace, Streams
from search.target import KINDS, Target

# Data sets read from a folder the job names in `data.path`.
PATH_DATASETS = ("cifar10", "imagefolder", "maskfolder", "boxfolder")

Selection = Literal["top-k", "asha"]
"""The final pick among the best candidates: the strategy's own (EagleEye's top-k fine-tune; the
best score otherwise), or Ray Tune trials under ASHA (`workers.selection`)."""

PruneSchedule = Literal["one-shot", "iterative"]
"""How the chosen widths are reached: one cut then the fine-tune, or `rounds` cuts along a geometric
path with a share of the fine-tune after each (`workers.pipeline.iterative_finetune`)."""

ID_MAX = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=ID_MAX, json_schema_extra={"format": "int64"})]
"""The id of a stored row (a job, an uploaded model) wherever one is given: a positive 64-bit
integer (the REST paths use it too). An id no column holds is simply not found (404)."""


def non_finite(value: Any) -> str | None:
    """Where the first non-finite number (infinity, NaN) in a JSON-like value is: "" for the
    value itself, `key.0.key` inside dicts and lists; None when every number is finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else ""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        where = non_finite(item)
        if where is not None:
            return f"{key}.{where}" if where else str(key)
    return None


class Section(BaseModel):
    """A part of the job config; unknown keys are refused (a typo is an error, not a default),
    and so is a non-finite number anywhere in it (JSON's 1e999, Infinity or NaN, or "inf"):
    JSON cannot store one, so a job would be kept as something else than what was asked."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v: Any, info: ValidationInfo) -> Any:
        kind = cls.model_fields[info.field_name or ""].annotation
        if isinstance(kind, type) and issubclass(kind, Section):
            return v  # a section checks its own fields, so the error names the innermost one
        where = non_finite(v)
        if where is not None:
            raise ValueError(f"{where + ': ' if where else ''}must be a finite number (not infinity or NaN)")
        return v


class ModelSpec(Section):
    """The network to prune: a zoo architecture or a factory (trained on the data first when no
    weights are given), an uploaded model, or a torch.export program file (CLI)."""

    zoo: str | None = Field(
        None,
        description="zoo architecture, e.g. convnet, resnet20 (GET /v1/zoo); on the CLI --model also takes "
        "FILE.pt2 (a torch.export program) or package.module:function",
    )
    args: dict[str, Any] = Field(
        default={}, description="zoo arguments (width, ...); num_classes/in_channels come from the data"
    )
    upload: RowId | None = Field(None, description="id of a model uploaded with POST /v1/models (service only)")
    weights: str | None = Field(
        None,
        description="trained weights file (.safetensors or weights-only .pt) on this machine (CLI only; "
        "the service fills it from model.upload); without weights the model is trained first",
    )

    program: str | None = Field(
        None,
        description="a torch.export program (.pt2) on this machine, with its trained weights (CLI only; "
        "the service fills it from model.upload)",
    )
    factory: str | None = Field(
        None, description="package.module:function that builds the network on this machine (CLI only)"
    )

    @model_validator(mode="before")
    @classmethod
    def _reference(cls, v: Any) -> Any:
        """`zoo: FILE.pt2` or `zoo: package.module:function` (what `--model` takes) names a
        program or a factory."""
        if isinstance(v, dict) and isinstance(v.get("zoo"), str):
            from pruning.intake import model_reference

            kind, value = model_reference(v["zoo"])
            if kind != "zoo":
                return {**v, "zoo": None, kind: value}
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = [k for k in ("zoo", "upload", "program", "factory") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError(f"give one of zoo, upload, program or factory, not both {sources[0]} and {sources[1]}")
        if not sources:
            raise ValueError("give zoo (an architecture name) or upload (an uploaded model's id)")
        if self.weights is not None and self.zoo is None and self.factory is None:
            raise ValueError("weights go with zoo or factory (an uploaded model or a program carries its own)")
        if self.zoo is not None:
            from pruning.models import list_models
            from pruning.models.zoo import check_model_args

            if self.zoo not in list_models():
                raise ValueError(f"unknown zoo model {self.zoo!r}; choose one of: {', '.join(list_models())}")
            self.args = check_model_args(self.zoo, self.args)
        return self


class DataSpec(Section):
    """A data set: digits, fashion-mnist, synthetic, scenes, boxscenes, cifar10/imagefolder/
    maskfolder/boxfolder read from `path`, or an archive uploaded with POST /v1/datasets
    (`{"upload": ID}`: an imagefolder, a maskfolder when the archive held images/ + masks/, a
    boxfolder when it held a YOLO or COCO layout)."""

    name: Literal[
        "digits",
        "fashion-mnist",
        "cifar10",
        "imagefolder",
        "synthetic",
        "scenes",
        "maskfolder",
        "boxscenes",
        "boxfolder",
    ] = Field(..., description=f"one of {', '.join(DATASETS)}")
    path: str | None = Field(
        None,
        description="folder for cifar10/imagefolder/maskfolder/boxfolder (the service requires it under "
        "SECATEURS_ALLOWED_DATA_ROOTS)",
    )
    upload: RowId | None = Field(
        None, description="id of an image folder archive uploaded with POST /v1/datasets (service only; no name/path)"
    )
    input_size: InputSize | None = Field(None, description="resize images to this many pixels (default: the set's)")
    subset: int | None = Field(None, gt=0, description="use at most this many training images")
    augment: bool = Field(
        True,
        description="random crops and flips of imagefolder, maskfolder, boxfolder, scenes and boxscenes "
        "training images",
    )

    @model_validator(mode="before")
    @classmethod
    def _upload_is_imagefolder(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("upload") is not None:
            if v.get("path") is not None or v.get("name") not in (None, "imagefolder"):
                raise ValueError("give either name (with path) or upload (an uploaded data set's id), not both")
            return {**v, "name": "imagefolder"}
        if isinstance(v, dict) and v.get("name") is None:
            raise ValueError("give name (a data set) or upload (an uploaded data set's id)")
        return v

    @model_validator(mode="after")
    def _path_rule(self) -> DataSpec:
        if self.upload is not None:
            return self
        if self.name in PATH_DATASETS and not self.path:
            raise ValueError(f"data set {self.name} needs a path")
        if self.name not in PATH_DATASETS and self.path and self.name != "fashion-mnist":
            raise ValueError(f"data set {self.name} takes no path")
        return self


class NamedSpec(Section):
    """A strategy chosen by name, with its options."""

    name: str = Field(..., description="search strategy (GET /v1/strategies)")
    options: dict[str, Any] = Field(default={}, description="the strategy's keyword options")


class EvaluatorSpec(Section):
    """How candidates are scored: an evaluator name (None: the strategy's default) and options."""

    name: str | None = Field(None, description="evaluator (GET /v1/evaluators); default: the strategy's")
    options: dict[str, Any] = Field(default={}, description="the evaluator's keyword options")


# Training from scratch defaults to what `pruning.train.TrainConfig` defaults to (one place).
_TR = TrainConfig()


class TrainSpec(Section):
    """Training of a zoo model (or factory) given without weights, by the final fine-tune's loop
    (`pruning.train.fit`): by default until validation accuracy stops improving (`patience`
    epochs without a gain, at most `max_epochs`), keeping the best epoch's weights; `epochs`
    asks for a fixed length instead."""

    epochs: float | None = Field(
        _TR.epochs, gt=0, le=1000, description="fixed length in epochs (default: until no gain, at most max_epochs)"
    )
    max_epochs: float = Field(_TR.max_epochs, gt=0, le=1000, description="most epochs when training until no gain")
    patience: int = Field(
        _TR.patience, ge=1, le=1000, description="epochs without a gain in validation accuracy before stopping"
    )
    lr: float = Field(_TR.lr, gt=0, le=10, description="SGD learning rate (cut tenfold on a plateau)")
    batch_size: int = Field(_TR.batch_size, ge=1, le=4096, description="training batch size")
    warmup_epochs: float | None = Field(
        None,
        ge=0,
        le=100,
        description="epochs over which the learning rate rises linearly to lr (default: the task's; 3 for "
        "detection, as YOLOv8 trains; 0 otherwise)",
    )


# The final fine-tune defaults to what `pruning.train.FinetuneConfig` defaults to (one place).
_FT = FinetuneConfig()


class FinetuneSpec(Section):
    """The final fine-tune of the chosen network. By default it runs until validation accuracy
    stops improving (`patience` validations without a gain), within `max_steps`, and keeps the
    best checkpoint; `epochs` asks for a fixed length instead. It starts from the weights the
    search's evaluator scored (fine-tuned ones where the evaluator fine-tunes). With
    `prune_schedule: iterative` it starts from the full network instead and cuts it `rounds`
    times, each cut followed by its share of the same budget (steps or epochs)."""

    epochs: float | None = Field(
        _FT.epochs, ge=0, le=1000, description="fixed length in epochs, 0 for none (default: until no gain)"
    )
    max_steps: int = Field(_FT.max_steps, ge=0, le=1_000_000, description="step budget (0: no fine-tune)")
    patience: int = Field(_FT.patience, ge=1, le=1000, description="validations without improvement before stopping")
    eval_every: int | None = Field(
        _FT.eval_every, ge=1, description="steps between validations (default: from the data size)"
    )
    schedule: Schedule = Field(_FT.schedule, description="plateau: x0.1 when stuck; cosine: annealed over max_steps")
    lr: float = Field(_FT.lr, gt=0, le=10, description="SGD learning rate")
    batch_size: int = Field(_FT.batch_size, ge=1, le=4096, description="batch size")
    kd_alpha: float = Field(
        _FT.kd_alpha, ge=0, le=1, description="> 0 distils from the unpruned network with this weight"
    )
    prune_schedule: PruneSchedule = Field(
        "one-shot",
        description="one-shot: cut once, then fine-tune; iterative: reach the chosen widths in `rounds` cuts along a "
        "geometric path from the full network, each followed by its share of the same fine-tune budget",
    )
    rounds: int = Field(3, ge=1, le=50, description="cuts of the iterative schedule")


# The search space's bounds default to what `SearchSpace` itself defaults to (one place); round_to alone
# defaults to None here: the job chooses it (`SearchSpace` measures it for a latency target).
_SPACE: dict[str, Any] = dict(SearchSpace.__init__.__kwdefaults__ or {})


class SpaceSpec(Section):
    """Per-group bounds of the search (`search.space.SearchSpace`)."""

    min_channels: int = Field(_SPACE["min_channels"], ge=1, description="fewest channels a group keeps")
    max_rate: float = Field(_SPACE["max_rate"], ge=0, lt=1, description="largest rate any group may be cut by")
    prune_stem: bool = Field(_SPACE["prune_stem"], description="allow cutting the first conv's channels")
    pinned: dict[str, float] | None = Field(_SPACE["pinned"], description="group -> fixed rate (0: keep it whole)")
    round_to: int | None = Field(
        None,
        ge=1,
        description="kept channels rounded up to a multiple of this (default: 1; for a latency target, the step "
        "the runtime's kernels reward, measured and cached with its latency tables, recorded in the report)",
    )
    streams: Streams = Field(
        _SPACE["streams"],
        description="residual streams (channels a residual add joins): search (cut like any group), last (kept "
        "whole when the other groups can meet the target, else cut no more than it needs) or whole",
    )

    @field_validator("pinned", mode="before")
    @classmethod
    def _pins(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {str(k): 0.0 for k in v}
        return v


class SearchSpec(Section):
    """Runner settings."""

    batch_size: int = Field(2, ge=1, le=256, description="proposals per ask (fanned out to the evaluation workers)")
    max_candidates: int | None = Field(None, ge=1, description="stop after this many candidates")
    val_batches: int | None = Field(
        None, ge=1, description="validation batches per candidate (default: the whole split)"
    )
    calibration_batches: int = Field(4, ge=1, le=1000, description="training batches for adaptive BN and data criteria")
    calibration_batch_size: int = Field(64, ge=1, le=4096, description="size of those batches")
    selection: Selection = Field(
        "top-k",
        description="final pick: top-k (the strategy's own, e.g. EagleEye's top-k fine-tune) or asha (the best "
        "selection_candidates policies fine-tuned as Ray Tune trials, ASHA stopping the weak ones early)",
    )
    selection_candidates: int = Field(9, ge=1, le=1000, description="policies that start an ASHA trial")
    selection_steps: int = Field(100, ge=1, le=100_000, description="fine-tune steps of the longest ASHA trial")
    selection_reduction: int = Field(3, ge=2, le=100, description="ASHA's reduction factor (1/factor go on)")
    selection_lr: float = Field(0.01, gt=0, le=10, description="learning rate of the ASHA trials' fine-tune")


class QuantizeSpec(Section):
    """Static INT8 quantization of the returned network (`workers.quantize`): after the
    fine-tune, `model.onnx` is quantized by ONNX Runtime (QDQ, per-channel weights, activation
    ranges calibrated on training images) into `model.int8.onnx`, scored on the test split and
    timed beside the FP32 network. When INT8 loses more than `max_drop` accuracy points, the
    other calibration methods are tried and the best kept, and the report says so."""

    mode: Literal["int8"] | None = Field(
        None, description="int8: also write model.int8.onnx (default: no quantization)"
    )
    calibration: Calibration = Field(
        "minmax", description="how activation ranges are set: minmax, entropy or percentile (ONNX Runtime's)"
    )
    calibration_batches: int = Field(
        8, ge=1, le=256, description="training batches (of 64 images) the activation ranges are calibrated on"
    )
    max_drop: float = Field(
        1.0, ge=0, le=100, description="most test accuracy points INT8 may lose before other calibrations are tried"
    )


def parse_target(value: Any) -> dict[str, Any]:
    """A target as `{"kind", "value", "absolute"}` from `{"flops": 0.5}` (a ratio in (0, 1]),
    `"params=120k"`, a `Target` or the dict form itself."""
    if isinstance(value, dict) and "kind" not in value:
        keys = [k for k in value if k in KINDS]
        if len(value) != 1 or len(keys) != 1:
            raise ValueError(f'needs exactly one of {", ".join(KINDS)}, e.g. {{"flops": 0.5}}')
        v = value[keys[0]]
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"{keys[0]} must be a number (a ratio) or a string like '120k'")
        if isinstance(v, (int, float)) and not 0 < v <= 1:
            raise ValueError(
                f"{keys[0]} ratio must be in (0, 1], got {v}; for an absolute budget use "
                f'{{"kind": "{keys[0]}", "value": {v}, "absolute": true}}'
            )
    try:
        return Target.from_value(value).as_dict()
    except (SearchError, TypeError, KeyError) as exc:
        raise ValueError(str(exc)) from exc


class JobConfig(Section):
    """A compression job. Every field but model, data, target and strategy has a default."""

    model: ModelSpec = Field(..., description="the network: a zoo architecture or an uploaded model")
    data: DataSpec = Field(..., description="the data set")
    task: Annotated[str, OneOf(list_tasks())] = Field(
        DEFAULT_TASK,
        description="what the network is trained and scored for: classification (labels, accuracy), "
        "distillation (the unpruned network's outputs, fidelity; no labels read), segmentation "
        "(per-pixel masks, mIoU), detection (boxes, COCO mAP)",
    )
    task_output: str | int | None = Field(
        None,
        description="the network output the task reads, for a network with several: a dict output's name "
        "or a position (default: the first)",
    )
    task_options: dict[str, Any] = Field(
        default={},
        description="the task's options (distillation: temperature, kinds; detection: layout, box_format, scores, "
        "strides, conf_threshold, iou_threshold, max_detections, loss, labels)",
    )
    target: dict[str, Any] = Field(
        ..., description='{"flops": 0.5} (ratio), "params=120k", or {"kind","value","absolute"}'
    )
    strategy: NamedSpec = Field(..., description="search strategy by name (GET /v1/strategies) and its options")
    criterion: str = Field("l1", description="channel importance criterion")
    evaluator: EvaluatorSpec = Field(default_factory=EvaluatorSpec, description="how candidates are scored")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec, description="final fine-tune of the chosen network")
    train: TrainSpec = Field(default_factory=TrainSpec, description="training of a zoo model given without weights")
    space: SpaceSpec = Field(default_factory=SpaceSpec, description="search-space bounds")
    search: SearchSpec = Field(default_factory=SearchSpec, description="runner settings")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the search, training and fine-tune")
    onnx: bool = Field(True, description="also export model.onnx (checked against PyTorch)")
    runtime: Runtime = Field(
        "eager",
        description="the runtime the pruned network is deployed with (eager, torchscript, onnxruntime, "
        "onnxruntime-int8: ONNX Runtime on the export statically quantized to INT8, inductor): a latency target's "
        "lookup table and the report's latency before/after are measured in it (inductor: the report only, not a "
        "latency target)",
    )
    priority: int = Field(
        0, ge=-100, le=100, description="queue priority: higher runs first; above 0 needs an admin token (service only)"
    )
    quantize: QuantizeSpec = Field(
        default_factory=QuantizeSpec, description="static INT8 quantization of the returned network's ONNX export"
    )

    @field_validator("target", mode="before")
    @classmethod
    def _valid_target(cls, v: Any) -> dict[str, Any]:
        return parse_target(v)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: NamedSpec) -> NamedSpec:
        from search.registry import check_strategy_options, list_strategies

        names = list_strategies()
        if v.name not in names:
            raise ValueError(f"unknown strategy {v.name!r}; choose one of: {', '.join(names)}")
        v.options = check_strategy_options(v.name, v.options, json=True)  # a SearchError is a ValueError
        return v

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, v: EvaluatorSpec) -> EvaluatorSpec:
        if v.name is None:
            return v
        from search.evaluators import check_evaluator_options, list_evaluators

        if v.name not in list_evaluators():
            raise ValueError(f"unknown evaluator {v.name!r}; choose one of: {', '.join(list_evaluators())}")
        v.options = check_evaluator_options(v.name, v.options, json=True)  # a SearchError is a ValueError
        return v

    @field_validator("task_output", mode="before")
    @classmethod
    def _output_key(cls, v: Any) -> Any:
        """An output's name (1 to 200 characters) or position (0 to 1000), else one error."""
        ok = (isinstance(v, str) and 0 < len(v) <= 200) or (type(v) is int and 0 <= v <= 1000) or v is None
        if not ok:
            raise ValueError("must be an output's name (1 to 200 characters) or position (0 to 1000)")
        return v

    @field_validator("task_options")
    @classmethod
    def _task_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from pruning.tasks import check_task_options

        task = info.data.get("task")
        return v if task is None else check_task_options(task, v, json=True)  # a TaskError is a ValueError

    @model_validator(mode="after")
    def _trained_for_task(self) -> JobConfig:
        """A task that compares against the unpruned network needs it trained (weights, a
        program or an upload), not a zoo model to train first."""
        from pruning.tasks import task_class

        m = self.model
        needed = task_class(self.task).trained_model_needed(self.task_options)
        if needed and (m.zoo is not None or m.factory is not None) and not m.weights:
            raise ValueError(f"the {self.task} task needs a trained network: give weights, a program or an upload")
        return self

    @model_validator(mode="after")
    def _data_for_task(self) -> JobConfig:
        """The task can read the data: masks for segmentation, boxes for detection (unless its
        `labels: false`), class labels for classification (an uploaded set is checked at submit,
        once its kind is known)."""
        from pruning.data import SEGMENTATION_DATASETS
        from pruning.tasks.detection import detection_data
        from pruning.tasks.segmentation import task_data_mismatch

        if self.data.upload is None:
            segmentation, detection = self.data.name in SEGMENTATION_DATASETS, detection_data(self.data.name)
            why = task_data_mismatch(self.task, segmentation, detection, self.task_options)
            if why:
                raise ValueError(why)
        return self

    @field_validator("runtime")
    @classmethod
    def _latency_runtime(cls, v: Runtime, info: ValidationInfo) -> Runtime:
        """The runtime can be measured on this machine (its packages import), and a latency target
        needs one its lookup table can be measured in."""
        why = unavailable(v)
        if why:
            raise ValueError(why)
        if (info.data.get("target") or {}).get("kind") == "latency":
            check_table_runtime(v)  # a SearchError is a ValueError
        return v

    @model_validator(mode="after")
    def _default_evaluator_options(self) -> JobConfig:
        """Evaluator options given without a name are the strategy's default evaluator's."""
        if self.evaluator.name is None and self.evaluator.options:
            from search.evaluators import check_evaluator_options
            from search.registry import strategy_class

            default = strategy_class(self.strategy.name).default_evaluator
            self.evaluator.options = check_evaluator_options(default, self.evaluator.options, json=True)
        return self

    @model_validator(mode="after")
    def _quantize_needs_onnx(self) -> JobConfig:
        """INT8 is made from the ONNX export."""
        if self.quantize.mode is not None and not self.onnx:
            raise ValueError("quantize needs onnx: true (model.int8.onnx is made from model.onnx)")
        if self.quantize.mode is not None and self.task != "classification":
            # the INT8 network is scored by top-1 accuracy in ONNX Runtime (`pruning.quantize.onnx_score`)
            raise ValueError(f"quantize: INT8 is scored for classification jobs only, not task {self.task!r}")
        return self

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v: str) -> str:
        from pruning.criteria import CRITERIA

        if v not in CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; choose one of: {', '.join(CRITERIA.names())}")
        return v

    @property
    def target_spec(self) -> Target:
        """The target as a `search.target.Target`."""
        return Target.from_value(self.target)

    def dataset_spec(self) -> str:
        """The `pruning.data.load_dataset` spec string of the data section."""
        return f"{self.data.name}:{self.data.path}" if self.data.path else self.data.name


def defaults_yaml() -> str:
    """Every job field with its default (required ones marked), one section per line: the block
    docs/service.md shows (a test keeps the two equal)."""
    import json

    def fmt(v: Any) -> str:
        return "null" if v is None else json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = []
    for name, info in JobConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            parts = []
            for sub, sinfo in ann.model_fields.items():
                value = "REQUIRED" if sinfo.is_required() else fmt(sinfo.get_default(call_default_factory=True))
                parts.append(f"{sub}: {value}")
            lines.append(f"{name}: {{{', '.join(parts)}}}")
        else:
            value = "REQUIRED" if info.is_required() else fmt(info.get_default(call_default_factory=True))
            lines.append(f"{name}: {value}")
    return "\n".join(lines)
