"""The model zoo: a registry of architectures by name.

`build_model(name, num_classes=, in_channels=, input_size=, width=)` builds one; every zoo
model accepts those keywords so a job spec or an architecture JSON can rebuild it. Each zoo
module registers its factories with `@register_model("name")`; importing this package imports
them all, so `MODELS` / `list_models()` is complete after `import pruning.models`.
"""

from __future__ import annotations

from .convnet import convnet
from .mobilenetv2 import mobilenetv2
from .resnet import resnet20, resnet56
from .vgg import vgg16_bn
from .zoo import MODELS, build_model, list_models, register_model

__all__ = [
    "MODELS",
    "build_model",
    "convnet",
    "list_models",
    "mobilenetv2",
    "register_model",
    "resnet20",
    "resnet56",
    "vgg16_bn",
]
