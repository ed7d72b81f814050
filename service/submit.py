"""From a validated `JobSpec` to the config dict the pipeline runs: resolve an uploaded
model to its zoo name, arguments and stored weights, check data paths against the allowed
roots, and refuse an infeasible target up front with `search.space.SearchSpace` (built on
the untrained architecture: resource counts do not depend on the weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pruning.data import DEFAULT_SIZES
from pruning.errors import PruningError
from pruning.models import build_model
from search.base import SearchError

from .config import Settings
from .jobspec import JobSpec, check_data_path
from .store import Store

# (in_channels, num_classes) of the sets whose shape is known without reading them
KNOWN_SHAPES = {"digits": (1, 10), "fashion-mnist": (1, 10), "cifar10": (3, 10), "synthetic": (3, 10)}
SPACE_KEYS = ("min_channels", "max_rate", "prune_stem", "pinned", "round_to")
# Strategy/evaluator options that name files the job reads: checked like data paths.
PATH_OPTIONS = ("supernet",)
# Options that would make a job write where the user says (e.g. Optuna's storage URL): CLI only.
REFUSED_OPTIONS = ("storage",)


class SpecError(ValueError):
    """A job spec that validates field by field but cannot run (one line for a 422)."""


def data_shape(data: dict[str, Any], path: str | None) -> tuple[int, int, int]:
    """(in_channels, num_classes, input_size) of a data spec, reading only folder names."""
    size = data.get("input_size") or DEFAULT_SIZES[data["name"]]
    if data["name"] == "imagefolder":
        classes = [p for p in Path(path).iterdir() if p.is_dir()]
        return 3, len(classes), size
    c, k = KNOWN_SHAPES[data["name"]]
    return c, k, size


def resolve_config(spec: JobSpec, team_id: int, store: Store, settings: Settings) -> dict[str, Any]:
    """The pipeline config of a job (raises SpecError with the field and the reason)."""
    from search.config import PipelineConfig

    config = spec.model_dump(mode="json", exclude={"priority"})
    model, data = config["model"], config["data"]
    if spec.model.upload is not None:
        up = store.get_model(team_id, spec.model.upload)
        if up is None:
            raise SpecError(f"model.upload: model {spec.model.upload} not found")
        config["model"] = {"zoo": up.zoo, "args": {**up.args, **model["args"]}, "weights": up.path}
    else:
        config["model"] = {"zoo": model["zoo"], "args": model["args"], "weights": None}
    for section in ("strategy", "evaluator"):
        options = config[section]["options"]
        for key in REFUSED_OPTIONS:
            if key in options:
                raise SpecError(f"{section}.options.{key}: not accepted by the service (use the CLI for it)")
        for key in PATH_OPTIONS:
            if options.get(key) is not None:
                try:
                    options[key] = str(check_data_path(str(options[key]), settings.allowed_data_roots))
                except ValueError as exc:
                    raise SpecError(f"{section}.options.{key}: {exc}") from exc
    path = data.pop("path", None)
    if path:
        try:
            path = str(check_data_path(path, settings.allowed_data_roots))
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
    check_feasible(config, path)
    if path:
        data["name"] = f"{data['name']}:{path}"
    try:
        return PipelineConfig.from_dict(config).as_dict()
    except (SearchError, PruningError, TypeError) as exc:
        raise SpecError(str(exc)) from exc


def check_feasible(config: dict[str, Any], path: str | None = None) -> None:
    """Refuse a target the smallest network the bounds allow cannot meet (latency targets are
    checked by the job itself: measuring the lookup table takes too long for a request)."""
    from search.space import SearchSpace

    c, k, size = data_shape(config["data"], path)
    args = {"num_classes": k, "in_channels": c, "input_size": size, **config["model"]["args"]}
    if config["target"]["kind"] == "latency":
        return
    try:
        net = build_model(config["model"]["zoo"], **args)
        space_opts = {key: v for key, v in (config.get("space") or {}).items() if key in SPACE_KEYS}
        SearchSpace(net, (c, size, size), config["target"], criterion=config["criterion"], **space_opts)
    except (SearchError, PruningError) as exc:
        raise SpecError(f"target: {exc}" if "infeasible" in str(exc) else str(exc)) from exc
    except (TypeError, RuntimeError) as exc:
        raise SpecError(f"model.args: cannot build {config['model']['zoo']} with these arguments: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
