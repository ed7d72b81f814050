"""Strategies by name. Each entry is "module:Class", imported only when asked for, so a
strategy whose module is missing or broken fails only when someone picks it."""
from __future__ import annotations

import importlib
from typing import Any

from .base import SearchError, Strategy

STRATEGIES: dict[str, str] = {
    "uniform": "search.strategies.uniform:UniformStrategy",
    "sensitivity": "search.strategies.sensitivity:SensitivityStrategy",
    "global": "search.strategies.global_threshold:GlobalThresholdStrategy",
    "eagleeye": "search.strategies.eagleeye:EagleEyeStrategy",
    "netadapt": "search.strategies.netadapt:NetAdaptStrategy",
    "optuna": "search.strategies.optuna_search:OptunaStrategy",
    "amc": "search.amc:AMCStrategy",
    "metapruning": "search.metapruning:MetaPruningStrategy",
    "autoslim": "search.autoslim:AutoSlimStrategy",
}


def list_strategies() -> list[str]:
    """Every strategy name, in registry order."""
    return list(STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class behind a strategy name (imports its module)."""
    if name not in STRATEGIES:
        raise SearchError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    module_name, _, cls_name = STRATEGIES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)
    except (ImportError, AttributeError) as exc:
        raise SearchError(f"strategy {name!r} is not available: {exc}") from exc


def make_strategy(name: str, space: Any, seed: int = 0, **options: Any) -> Strategy:
    """Build a strategy by name as `Cls(space, seed=seed, **options)`; bad options are a SearchError."""
    cls = strategy_class(name)
    try:
        return cls(space, seed=seed, **options)
    except TypeError as exc:
        raise SearchError(f"bad option for strategy {name!r}: {exc}") from exc
