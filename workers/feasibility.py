"""The feasibility check's one-line refusals, shared by the two places that make it: the submit
(`service.submit`, a 422 before the job exists, when the network's trace is at hand) and the job
itself (`workers.pipeline.prepare`, before any training, when the submit could not check in time).
Both build the same `search.space.SearchSpace` on the same architecture and word a refusal with
the functions here, so a spec gets the same verdict and the same line on either path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pruning.errors import PruningError
from pruning.intake import Intake
from pruning.tasks import OutputKey, TaskError
from search.base import SearchError
from search.space import SearchSpace, Traced, trace_space

from .config import JobConfig, ModelSpec
from .network import build_network


class Refused(SearchError):
    """A job its feasibility check refuses. `str()` is the engine's own message (what the CLI
    prints); `line` is the submit's one-line 422 for the same spec (what the service records as
    the job's error)."""

    def __init__(self, message: str, line: str) -> None:
        super().__init__(message)
        self.line = line


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def network_line(spec: ModelSpec, exc: Exception) -> str | None:
    """The refusal for a network that cannot be built, converted or traced (`spec` the resolved
    model: a zoo name or an uploaded program); None for an error that is no refusal (a bug)."""
    if spec.program is not None:
        if isinstance(exc, PruningError):
            return f"model.upload: {exc}"
        return f"model.upload: the program's channel groups cannot be traced: {_first(exc)}"
    if isinstance(exc, PruningError):
        return str(exc)
    if isinstance(exc, TypeError | RuntimeError):
        return f"model.args: cannot build {spec.zoo or ''} with these arguments: {_first(exc)}"
    return None


def target_line(exc: Exception) -> str:
    """The refusal for a target (or bounds) the search space rejects."""
    return f"target: {exc}" if "infeasible" in str(exc) else str(exc)


def checked_network(
    spec: ModelSpec,
    args: dict[str, Any],
    intake: Intake | None,
    data: str,
    task_output: OutputKey | None = None,
    labels: bool = True,
) -> nn.Module:
    """`workers.network.build_network`, a refusal raised as `Refused` in the submit's words: data
    that does not fit an uploaded program, a zoo model these arguments cannot build."""
    try:
        return build_network(spec, args, intake, data, task_output, labels)
    except Exception as exc:
        if spec.factory is not None:  # the CLI's own factory: its error as it is
            raise
        if isinstance(exc, TaskError):  # a task_output the program lacks: the submit's check_task_output line
            line: str | None = str(exc)
        elif intake is not None and isinstance(exc, PruningError):
            line = f"data: {exc}"
        else:
            line = network_line(spec, exc)
        if line is None:
            raise
        raise Refused(str(exc), line) from exc


def traced_network(spec: ModelSpec, model: nn.Module, input_shape: Sequence[int]) -> Traced:
    """`trace_space(model, input_shape)`, a failure raised as `Refused` in the submit's words."""
    try:
        return trace_space(model, input_shape)
    except Exception as exc:
        line = network_line(spec, exc)
        if line is None:
            raise
        raise Refused(str(exc), line) from exc


def checked_space(
    cfg: JobConfig,
    model: nn.Module,
    input_shape: Sequence[int],
    traced: Traced,
    *,
    criterion: str | None = None,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> SearchSpace:
    """The job's search space on `traced`; a target no network in the bounds can meet (or bounds
    the space rejects) raised as `Refused` in the submit's words."""
    options: dict[str, Any] = cfg.space.model_dump()
    try:
        return SearchSpace(
            model,
            input_shape,
            cfg.target_spec,
            **options,
            criterion=criterion or cfg.criterion,
            calibration=calibration,
            runtime=cfg.runtime,
            traced=traced,
        )
    except (SearchError, PruningError) as exc:
        raise Refused(str(exc), target_line(exc)) from exc
