"""The zoo's registry: `MODELS`, the door to it (`register_model`) and `build_model`.

Zoo modules register their factories with `@register_model("name")`; `MODELS` names them and
imports them on its first lookup (`pruning.models` imports them too, then adds the factories of
installed packages), so the registry is complete whichever module was imported first."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, create_model
from torch import nn

from ..registry import Registry, check_values, given, signature_schema

ModelFactory = Callable[..., nn.Module]

ZOO_MODULES = tuple(
    f"pruning.models.{m}" for m in ("convnet", "deeplab", "mobilenetv2", "resnet", "unet", "vgg", "yolo")
)
"""The modules that define the built-in architectures."""

MODELS: Registry[ModelFactory] = Registry("model", sort=True, modules=ZOO_MODULES)

register_model = MODELS.register
"""Add an architecture to the zoo: `@register_model("name")` on a factory, or `register_model("name", factory)`."""

# The arguments every zoo factory takes, typed and bounded once (factories annotate with these;
# one whose size grows with another argument narrows it, as the convnet does its input size).
NumClasses = Annotated[int, Field(ge=1, le=10_000, description="output classes")]
InChannels = Annotated[int, Field(ge=1, le=16, description="input image channels")]
InputSize = Annotated[int, Field(ge=8, le=1024, description="input image side in pixels")]
Width = Annotated[float, Field(gt=0, le=2, description="channel multiplier (1: the paper's widths)")]

MAX_PARAMS = 128_000_000
"""The most parameters a zoo model can have within its declared bounds (512 MB of float32;
tests/test_service_edges.py builds each model at its largest arguments to hold this): arguments
that would build a bigger one are refused by their bounds, before anything is allocated."""


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return MODELS.names()


@functools.cache
def _schema(factory: ModelFactory, name: str) -> type[BaseModel]:
    schema = signature_schema(factory, f"{name} arguments")
    if "input_size" in schema.model_fields:
        return schema
    return create_model(schema.__name__, __base__=schema, input_size=(InputSize | None, None))


def model_args_schema(name: str) -> type[BaseModel]:
    """The pydantic schema of a zoo model's arguments, from its factory's annotated signature
    (plus `input_size`, which every model accepts)."""
    return _schema(MODELS.get(name), name)


def check_model_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` checked against the model's schema (types and bounds, no unknown keys; None values
    are left out): the given ones, validated, that the factory takes. A PruningError names each
    bad argument. The one check of model arguments: job specs, uploads and `build_model` use it."""
    factory = MODELS.get(name)
    parsed = check_values(
        _schema(factory, name), {k: v for k, v in args.items() if v is not None}, f"model {name!r}", "argument"
    )
    checked = given(parsed)
    if "input_size" not in inspect.signature(factory).parameters:
        checked.pop("input_size", None)
    return checked


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model. Every zoo model takes `num_classes`, `in_channels` and `width`;
    `input_size` is accepted by all and used by those whose shape depends on it (the
    convnet's flatten), ignored by fully convolutional ones. Arguments are checked first
    (`check_model_args`): a bad one is a one-line PruningError, never a huge allocation."""
    return MODELS.get(name)(**check_model_args(name, kwargs))
