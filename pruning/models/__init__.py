"""The model zoo: a registry of architectures by name.

`build_model(name, num_classes=, in_channels=, input_size=, width=)` builds one; every zoo
model accepts those keywords so a job spec or an architecture JSON can rebuild it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import PruningError
from .convnet import convnet
from .mobilenetv2 import mobilenetv2
from .resnet import resnet20, resnet56
from .vgg import vgg16_bn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add an architecture to the zoo under `name`."""
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    """Names of every registered architecture."""
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model. Every zoo model takes `num_classes`, `in_channels` and `width`;
    `input_size` is accepted by all and used by those whose shape depends on it (the
    convnet's flatten), ignored by fully convolutional ones."""
    if name not in _REGISTRY:
        raise PruningError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    factory = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    unknown = [k for k in kwargs if k not in accepted and k != "input_size"]
    if unknown:
        raise PruningError(f"model {name!r} takes no argument(s) {', '.join(unknown)}")
    return factory(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})


for _name, _factory in {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "vgg16_bn": vgg16_bn,
    "mobilenetv2": mobilenetv2,
    "convnet": convnet,
}.items():
    register_model(_name, _factory)
