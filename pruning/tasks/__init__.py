"""Tasks: what a network is trained and scored for (classification, distillation, ...).

`make_task(name, output=..., teacher=..., **options)` builds one; `pruning.tasks.base` states
the contract every task meets; `pruning.tasks.registry` holds them by name."""

from .base import (
    Metric,
    OutputKey,
    Score,
    Task,
    TaskError,
    max_difference,
    named_outputs,
    output_key,
    output_names,
    select_output,
    softened_kl,
)
from .registry import (
    DEFAULT_TASK,
    TASK_MODULES,
    TASKS,
    check_task_options,
    list_tasks,
    make_task,
    register_task,
    task_class,
    task_options,
)

__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "TASK_MODULES",
    "Metric",
    "OutputKey",
    "Score",
    "Task",
    "TaskError",
    "check_task_options",
    "list_tasks",
    "make_task",
    "max_difference",
    "named_outputs",
    "output_key",
    "output_names",
    "register_task",
    "select_output",
    "softened_kl",
    "task_class",
    "task_options",
]
