"""The zoo's registry: `MODELS`, the door to it (`register_model`) and `build_model`.

Zoo modules register their factories with `@register_model("name")`; `pruning.models`
imports every zoo module, so the registry is complete once `pruning.models` is imported."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import PruningError
from ..registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model", sort=True)

register_model = MODELS.register
"""Add an architecture to the zoo: `@register_model("name")` on a factory, or `register_model("name", factory)`."""


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return MODELS.names()


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model. Every zoo model takes `num_classes`, `in_channels` and `width`;
    `input_size` is accepted by all and used by those whose shape depends on it (the
    convnet's flatten), ignored by fully convolutional ones."""
    factory = MODELS.get(name)
    accepted = inspect.signature(factory).parameters
    unknown = [k for k in kwargs if k not in accepted and k != "input_size"]
    if unknown:
        raise PruningError(f"model {name!r} takes no argument(s) {', '.join(unknown)}")
    return factory(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})
