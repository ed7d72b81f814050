"""Strategies by name. Each strategy class registers itself where it is defined
(`@register_strategy("name")`); `import search` imports every strategy module, so the
registry is complete once the package is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pruning.registry import Registry

from .base import SearchError, Strategy

if TYPE_CHECKING:
    from .space import SearchSpace

STRATEGIES: Registry[type[Strategy]] = Registry("strategy", error=SearchError)
"""Strategy classes by name, in registration order (the order `search/__init__` imports them)."""

register_strategy = STRATEGIES.register
"""Make a strategy available by name: `@register_strategy("name")` on a `Strategy` subclass."""


def list_strategies() -> list[str]:
    """Every strategy name, in registry order."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class behind a strategy name; an unknown name is a SearchError."""
    return STRATEGIES.get(name)


def make_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    """Build a strategy by name as `Cls(space, seed=seed, **options)`; bad options are a SearchError."""
    cls = strategy_class(name)
    try:
        return cls(space, seed=seed, **options)
    except TypeError as exc:
        raise SearchError(f"bad option for strategy {name!r}: {exc}") from exc
