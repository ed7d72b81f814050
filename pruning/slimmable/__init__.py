"""Slimmable networks (Yu et al. 2018) and universally slimmable training (Yu & Huang 2019):
one set of weights that runs at many widths, per channel group too, and exports any of them
as a plain, physically smaller zoo model."""

from .io import load_supernet, save_supernet, supernet_meta
from .network import (
    Config,
    FirstK,
    SlimmableNet,
    calibrate_bn,
    export_config,
    make_slimmable,
    set_config,
    set_width,
    width_channels,
)
from .train import (
    SlimTrainConfig,
    accumulate_gradients,
    evaluate_config,
    soft_cross_entropy,
    step_configs,
    train_slimmable,
)

__all__ = [
    "Config",
    "FirstK",
    "SlimTrainConfig",
    "SlimmableNet",
    "accumulate_gradients",
    "calibrate_bn",
    "evaluate_config",
    "export_config",
    "load_supernet",
    "make_slimmable",
    "save_supernet",
    "set_config",
    "set_width",
    "soft_cross_entropy",
    "step_configs",
    "supernet_meta",
    "train_slimmable",
    "width_channels",
]
