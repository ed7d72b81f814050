"""Tasks by name: `TASKS`, the door to it (`register_task`) and `make_task`.

Each task module registers its class with `@register_task("name")`; `TASK_MODULES` names the
modules, in the order the job config lists the tasks (the first is the default), and the
registry imports them on its first lookup. A new task is one module under `pruning/tasks/`
named here: the job config's allowed `task` values, the CLI's `--task` choices and the
dashboard's form all read `list_tasks()`."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from torch import nn

from ..registry import Registry, check_values, given, signature_schema
from .base import OutputKey, Task, TaskError

TASK_MODULES = (
    "pruning.tasks.classification",
    "pruning.tasks.distillation",
    "pruning.tasks.segmentation",
    "pruning.tasks.detection",
)
"""The modules that define tasks, the default task's first."""

TASKS: Registry[type[Task]] = Registry("task", error=TaskError, modules=TASK_MODULES)
"""Task classes by name, in `TASK_MODULES` order."""

register_task = TASKS.register
"""Make a task available by name: `@register_task("name")` on a `Task` subclass."""

DEFAULT_TASK = "classification"


def list_tasks() -> list[str]:
    """Names of every task, the default first."""
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    """The class behind a task name; an unknown name is a one-line TaskError."""
    return TASKS.get(name)


@functools.cache
def _options(name: str) -> type[BaseModel]:
    return signature_schema(task_class(name), f"{name} options", skip=("output", "teacher"))


def task_options(name: str) -> type[BaseModel]:
    """The pydantic schema of a task's options: its constructor's parameters but `output` and
    `teacher`, with their annotations (bounds included) and defaults."""
    return _options(name)


def check_task_options(name: str, options: Mapping[str, Any], json: bool = False) -> dict[str, Any]:
    """The given options, validated by the task's schema (JSON-ready values with `json`); a
    TaskError names each bad or unknown option."""
    parsed = check_values(task_options(name), options, f"task {name!r}", "option", error=TaskError)
    return given(parsed, json=json)


def make_task(
    name: str = DEFAULT_TASK,
    output: OutputKey | None = None,
    teacher: nn.Module | None = None,
    **options: Any,
) -> Task:
    """A task by name, reading the network output `output` (None: the first), with the unpruned
    network as `teacher` (the tasks that compare against it keep a frozen copy) and its options
    (checked first)."""
    cls = task_class(name)
    return cls(output=output, teacher=teacher, **check_task_options(name, options))
