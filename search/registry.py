"""Strategies by name. Each strategy class registers itself where it is defined
(`@register_strategy("name")`, one module or subpackage of `search.strategies` each); the
registry names those modules and imports them on its first lookup, so it is complete, in the
same order, whichever module was imported first."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from pruning.registry import Registry, check_values, given, signature_schema

from .base import SearchError
from .space import SearchSpace
from .strategies.base import Strategy

STRATEGY_MODULES = tuple(
    f"search.strategies.{m}"
    for m in (
        "uniform",
        "sensitivity",
        "global_threshold",
        "eagleeye",
        "netadapt",
        "optuna_search",
        "amc",
        "metapruning",
        "autoslim",
    )
)
"""The modules that define the built-in strategies, in `list_strategies()`'s order."""

STRATEGIES: Registry[type[Strategy]] = Registry("strategy", error=SearchError, modules=STRATEGY_MODULES)
"""Strategy classes by name, in the order of `STRATEGY_MODULES` (the built-ins load on first lookup)."""

register_strategy = STRATEGIES.register
"""Make a strategy available by name: `@register_strategy("name")` on a `Strategy` subclass."""


def list_strategies() -> list[str]:
    """Every strategy name, in registry order."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class behind a strategy name; an unknown name is a SearchError."""
    return STRATEGIES.get(name)


@functools.cache
def _options(cls: type[Strategy]) -> type[BaseModel]:
    return signature_schema(cls, f"{cls.name} options", skip=("space", "seed"))


def strategy_options(name: str) -> type[BaseModel]:
    """The pydantic schema of a strategy's options: its constructor's keyword parameters, their
    annotations (bounds included) and defaults (`pruning.registry.signature_schema`)."""
    return _options(strategy_class(name))


def check_strategy_options(name: str, options: dict[str, Any], json: bool = False) -> dict[str, Any]:
    """The given options, validated by the strategy's schema (JSON-ready values with `json`);
    a SearchError names each bad or unknown option."""
    parsed = check_values(strategy_options(name), options, f"strategy {name!r}", "option", error=SearchError)
    return given(parsed, json=json)


def make_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    """Build a strategy by name as `Cls(space, seed=seed, **options)`, the options checked
    first (`check_strategy_options`); bad options are a SearchError."""
    cls = strategy_class(name)
    checked = check_strategy_options(name, options)
    try:
        return cls(space, seed=seed, **checked)
    except TypeError as exc:
        raise SearchError(f"bad option for strategy {name!r}: {exc}") from exc
