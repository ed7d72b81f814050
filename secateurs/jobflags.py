"""Command-line flags generated from the job configuration (`workers.config.JobConfig`): one
flag per field, named after its path (`finetune.max_steps` → `--finetune-max-steps`), with the
model's default and description. `ALIASES` keeps the short names users know (`--model`,
`--data`, `--option`, ...); `NOT_ON_CLI` lists the fields that only mean something to the
service. `config_from_args` turns parsed flags back into the config dict."""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pruning.registry import OneOf
from workers.config import JobConfig, Section

from .common import CliError, parse_kv, parse_value

ALIASES: dict[str, str] = {
    "model.zoo": "--model",
    "model.weights": "--weights",
    "data.name": "--data",
    "data.input_size": "--input-size",
    "data.subset": "--subset",
    "strategy.name": "--strategy",
    "strategy.options": "--option",
    "evaluator.name": "--evaluator",
    "evaluator.options": "--evaluator-option",
    "space.max_rate": "--max-rate",
    "space.prune_stem": "--prune-stem",
    "space.pinned": "--pin",
    "search.val_batches": "--val-batches",
}
OPTION_FIELDS = ("strategy.options", "evaluator.options", "task_options")
"""Fields given as repeated KEY=VALUE flags."""
NOT_ON_CLI: dict[str, str] = {
    "model.upload": "an id of the service's uploads; the CLI takes --weights FILE",
    "data.upload": "an id of the service's uploads; the CLI takes --data imagefolder --data-path DIR",
    "priority": "the service's queue order",
}


@dataclass(frozen=True)
class Leaf:
    """One configurable field: its dotted path and pydantic field info."""

    path: str
    info: FieldInfo

    @property
    def dest(self) -> str:
        return "cfg__" + self.path.replace(".", "__")

    @property
    def flag(self) -> str:
        return "--" + self.path.replace(".", "-").replace("_", "-")

    @property
    def default(self) -> Any:
        """The model's default (None for a required field)."""
        if self.info.default is not PydanticUndefined:
            return self.info.default
        if self.info.default_factory is not None:
            return self.info.default_factory()  # type: ignore[call-arg]
        return None


def _section(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def leaves(model: type[BaseModel] = JobConfig, prefix: str = "") -> list[Leaf]:
    """Every leaf field of the job config, depth first, in declaration order."""
    out: list[Leaf] = []
    for name, info in model.model_fields.items():
        sub = _section(info.annotation)
        if sub is not None:
            out.extend(leaves(sub, f"{prefix}{name}."))
        else:
            out.append(Leaf(f"{prefix}{name}", info))
    return out


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type of an annotation, whether None is allowed); `Annotated` bounds are
    pydantic's to check, so they are looked through."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (_scalar(args[0])[0] if len(args) == 1 else annotation), True
    if origin is typing.Annotated:
        return _scalar(typing.get_args(annotation)[0])
    return annotation, False


def _add(parser: argparse.ArgumentParser, leaf: Leaf) -> None:
    flags = [leaf.flag] + ([ALIASES[leaf.path]] if leaf.path in ALIASES and ALIASES[leaf.path] != leaf.flag else [])
    flags.sort(key=lambda f: (f != ALIASES.get(leaf.path), f))  # the familiar name first in --help
    help_text = (leaf.info.description or "").replace("%", "%%")
    required = leaf.info.is_required()
    kind, _ = _scalar(leaf.info.annotation)
    kw: dict[str, Any] = {"dest": leaf.dest, "help": help_text, "metavar": leaf.path.rsplit(".", 1)[-1].upper()}
    one_of = next((m for m in leaf.info.metadata if isinstance(m, OneOf)), None)
    if leaf.path in OPTION_FIELDS:
        kw.update(action="append", default=[], metavar="KEY=VALUE", help=f"{help_text} (repeatable)")
    elif one_of is not None:
        names = one_of.choices() if callable(one_of.choices) else one_of.choices
        kw.update(choices=list(names), default=leaf.default, required=required, metavar=None)
    elif leaf.path == "task_output":
        kw.update(default=None, metavar="NAME|INDEX")
    elif leaf.path == "space.pinned":
        kw.update(action="append", default=[], metavar="GROUP[=RATE]", help=f"{help_text} (repeatable)")
    elif leaf.path == "model.args":
        kw.update(default="{}", metavar="JSON")
    elif leaf.path == "target":
        kw.update(
            required=True, metavar="KIND=VALUE", help="flops=0.5, params=120k, memory=2MB, latency=3ms, latency=0.6"
        )
    elif kind is bool:
        kw.pop("metavar")
        kw.update(action=argparse.BooleanOptionalAction, default=leaf.default)
    elif typing.get_origin(kind) is Literal:
        kw.update(choices=list(typing.get_args(kind)), default=leaf.default, required=required, metavar=None)
    elif kind in (int, float, str):
        kw.update(type=kind, default=leaf.default, required=required)
    else:
        raise TypeError(f"no command-line form for job field {leaf.path} ({leaf.info.annotation})")
    if not required and "default" in kw and kw["default"] not in (None, [], "{}"):
        kw["help"] = f"{kw['help']} (default {kw['default']})"
    parser.add_argument(*flags, **kw)


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every job field but those in `NOT_ON_CLI`."""
    group = parser.add_argument_group("job", "the job configuration (the same fields as a REST job spec)")
    for leaf in leaves():
        if leaf.path not in NOT_ON_CLI:
            _add(group, leaf)  # type: ignore[arg-type]


def _value(leaf: Leaf, raw: Any) -> Any:
    if leaf.path in OPTION_FIELDS:
        return {k: parse_value(v) for k, v in map(parse_kv, raw)}
    if leaf.path == "space.pinned":
        pins: dict[str, float] = {}
        for item in raw:
            key, _, rate = item.partition("=")
            pins[key] = float(rate) if rate else 0.0
        return pins or None
    if leaf.path == "task_output" and isinstance(raw, str) and raw.isdigit():
        return int(raw)  # a position; a dict output's name is not all digits (a tuple's are positions)
    if leaf.path == "model.args":
        try:
            args = json.loads(raw)
        except ValueError as exc:
            raise CliError(f"--model-args must be a JSON object: {exc}") from exc
        if not isinstance(args, dict):
            raise CliError("--model-args must be a JSON object, e.g. '{\"width\": 0.5}'")
        return args
    return raw


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The job config dict of parsed flags (validate it with `JobConfig.model_validate`)."""
    config: dict[str, Any] = {}
    for leaf in leaves():
        if leaf.path in NOT_ON_CLI:
            continue
        node = config
        *parents, name = leaf.path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = _value(leaf, getattr(args, leaf.dest))
    return config
