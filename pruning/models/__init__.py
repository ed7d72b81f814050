"""The model zoo: a registry of architectures by name.

`build_model(name, num_classes=, in_channels=, input_size=, width=)` builds one; every zoo
model accepts those keywords so a job spec or an architecture JSON can rebuild it. Each zoo
module registers its factories with `@register_model("name")`; importing this package imports
them all, so `MODELS` / `list_models()` is complete after `import pruning.models`; then the
factories installed packages declare as `secateurs.models` entry points join (`plugins`).
"""

from __future__ import annotations

from .convnet import convnet
from .deeplab import deeplabv3
from .mobilenetv2 import mobilenetv2
from .plugins import GROUP as ENTRY_POINT_GROUP
from .plugins import load_entry_points
from .resnet import resnet18, resnet20, resnet56
from .unet import unet
from .vgg import vgg16_bn
from .yolo import yolo_nano, yolo_small
from .zoo import MODELS, build_model, list_models, register_model

__all__ = [
    "ENTRY_POINT_GROUP",
    "MODELS",
    "build_model",
    "convnet",
    "deeplabv3",
    "list_models",
    "load_entry_points",
    "mobilenetv2",
    "register_model",
    "resnet18",
    "resnet20",
    "resnet56",
    "unet",
    "vgg16_bn",
    "yolo_nano",
    "yolo_small",
]

load_entry_points()
