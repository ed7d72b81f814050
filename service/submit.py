"""From a submitted `JobConfig` to the resolved one the pipeline runs: resolve an uploaded
model to its zoo name, arguments and stored weights, check data and option paths against the
allowed roots, and refuse an infeasible target up front with `search.space.SearchSpace`
(built on the untrained architecture: resource counts do not depend on the weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from pruning.data import DEFAULT_SIZES
from pruning.errors import PruningError
from pruning.imagefolder import imagefolder_shape
from pruning.intake import intake_program
from pruning.models import build_model
from search.base import SearchError
from workers.config import JobConfig
from workers.network import check_program_data

from .config import Settings
from .store import Store

# (in_channels, num_classes) of the sets whose shape is known without reading them
KNOWN_SHAPES = {"digits": (1, 10), "fashion-mnist": (1, 10), "cifar10": (3, 10), "synthetic": (3, 10)}
# Strategy/evaluator options that name files the job reads: checked like data paths.
PATH_OPTIONS = ("supernet",)
# Options that would make a job write where the user says (e.g. Optuna's storage URL): CLI only.
REFUSED_OPTIONS = ("storage",)


class SpecError(ValueError):
    """A job spec that validates field by field but cannot run (one line for a 422)."""


def check_data_path(path: str, roots: list[Path]) -> Path:
    """Resolve a data path and require it to exist under one of the allowed roots."""
    p = Path(path).expanduser().resolve()
    if not any(p == r.resolve() or r.resolve() in p.parents for r in roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured (SECATEURS_ALLOWED_DATA_ROOTS)"
        raise ValueError(f"data.path {path} is outside the allowed data roots ({allowed})")
    if not p.exists():
        raise ValueError(f"data.path {path} does not exist")
    return p


def data_shape(cfg: JobConfig) -> tuple[int, int, int]:
    """(in_channels, num_classes, input_size) of a job's data, reading only folder names and a
    few image headers (`pruning.imagefolder.imagefolder_shape`)."""
    size = cfg.data.input_size or DEFAULT_SIZES[cfg.data.name]
    if cfg.data.name == "imagefolder":
        assert cfg.data.path is not None
        channels, classes = imagefolder_shape(cfg.data.path)
        return channels, classes, size
    c, k = KNOWN_SHAPES[cfg.data.name]
    return c, k, size


def resolve_config(spec: JobConfig, team_id: int, store: Store, settings: Settings) -> JobConfig:
    """The job as it will run (raises SpecError with the field and the reason)."""
    if spec.model.weights is not None:
        raise SpecError(
            "model.weights: a server path is not accepted; upload the file (POST /v1/models) and give model.upload"
        )
    if spec.model.program is not None:
        raise SpecError(
            "model.program: a server path is not accepted; upload the .pt2 (POST /v1/models) and give model.upload"
        )
    if spec.model.factory is not None:
        raise SpecError(
            "model.factory: not accepted by the service; install the package with a secateurs.models "
            "entry point and give model.zoo"
        )
    cfg = spec.model_copy(deep=True)
    if spec.model.upload is not None:
        up = store.get_model(team_id, spec.model.upload)
        if up is None:
            raise SpecError(f"model.upload: model {spec.model.upload} not found")
        try:
            if up.path.endswith(".pt2"):  # a program: its architecture and weights are in the file
                if spec.model.args:
                    raise SpecError("model.args: an uploaded .pt2 program takes no arguments")
                cfg.model = type(spec.model)(program=up.path)
            else:
                cfg.model = type(spec.model)(zoo=up.zoo, args={**up.args, **spec.model.args}, weights=up.path)
        except ValidationError as exc:
            raise SpecError(f"model.args: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from exc
    for section, options in (("strategy", cfg.strategy.options), ("evaluator", cfg.evaluator.options)):
        for key in REFUSED_OPTIONS:
            if key in options:
                raise SpecError(f"{section}.options.{key}: not accepted by the service (use the CLI for it)")
        for key in PATH_OPTIONS:
            if options.get(key) is not None:
                try:
                    options[key] = str(check_data_path(str(options[key]), settings.allowed_data_roots))
                except ValueError as exc:
                    raise SpecError(f"{section}.options.{key}: {exc}") from exc
    if cfg.data.path:
        try:
            cfg.data.path = str(check_data_path(cfg.data.path, settings.allowed_data_roots))
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
    if spec.data.upload is not None:
        ds = store.get_dataset(team_id, spec.data.upload)
        if ds is None:
            raise SpecError(f"data.upload: data set {spec.data.upload} not found")
        cfg.data = cfg.data.model_copy(update={"path": ds.path, "upload": None})
    try:
        shape = data_shape(cfg)
    except PruningError as exc:
        raise SpecError(f"data: {exc}") from exc
    check_data_fits(cfg, shape[0], shape[1])
    check_feasible(cfg, shape)
    return cfg


def check_data_fits(cfg: JobConfig, channels: int, classes: int) -> None:
    """Refuse data whose image channels or classes differ from those the model's arguments fix
    (an uploaded model's, or zoo arguments given in model.args), naming both numbers."""
    args = cfg.model.args
    want = args.get("num_classes")
    if want is not None and want != classes:
        raise SpecError(f"data: the data set has {classes} classes, the model outputs {want} (model.args.num_classes)")
    want = args.get("in_channels")
    if want is not None and want != channels:
        raise SpecError(f"data: the images have {channels} channels, the model takes {want} (model.args.in_channels)")


def check_program(cfg: JobConfig) -> None:
    """An uploaded program's job: the data must fit the program's input and outputs (a refusal
    names both shapes) and, unless the target is a latency, the target must be feasible on the
    converted network."""
    assert cfg.model.program is not None
    try:
        intake = intake_program(cfg.model.program)
        c, k, _ = data_shape(cfg)
        size = cfg.data.input_size or intake.input_shape[1]
        check_program_data(intake.input_shape, intake.num_outputs, (c, size, size), k, cfg.data.name)
    except PruningError as exc:
        raise SpecError(f"data: {exc}") from exc
    if cfg.target["kind"] == "latency":
        return
    try:
        check_target(cfg, intake.module, intake.input_shape)
    except (TypeError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"model.upload: the program's channel groups cannot be traced: {first}") from exc


def check_target(cfg: JobConfig, net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Refuse a target the smallest network the space's bounds allow cannot meet on `net`."""
    from search.space import SearchSpace

    try:
        SearchSpace(
            net,
            input_shape,
            cfg.target_spec,
            criterion=cfg.criterion,
            **cfg.space.model_dump(),
            runtime=cfg.runtime,
        )
    except (SearchError, PruningError) as exc:
        raise SpecError(f"target: {exc}" if "infeasible" in str(exc) else str(exc)) from exc


def check_feasible(cfg: JobConfig, shape: tuple[int, int, int] | None = None) -> None:
    """Refuse a target the smallest network the bounds allow cannot meet (latency targets are
    checked by the job itself: measuring the lookup table takes too long for a request).
    `shape` is the data's `data_shape` when known. An uploaded program is checked by
    `check_program`."""
    if cfg.model.program is not None:
        check_program(cfg)
        return
    if cfg.target["kind"] == "latency":
        return
    c, k, size = shape or data_shape(cfg)
    args: dict[str, Any] = {"num_classes": k, "in_channels": c, "input_size": size, **cfg.model.args}
    zoo = cfg.model.zoo or ""
    try:
        net = build_model(zoo, **args)
        check_target(cfg, net, (c, size, size))
    except PruningError as exc:
        raise SpecError(str(exc)) from exc
    except (TypeError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"model.args: cannot build {zoo} with these arguments: {first}") from exc
