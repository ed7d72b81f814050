"""The pruning engine: zoo, data, dependency graph and cutting, criteria, masks, counting,
BN recalibration, training and export. No service code lives here."""

from .cut import (
    CutOutcome,
    Policy,
    channel_groups,
    cut_model,
    global_policy,
    kept_channels,
    prune,
    resolve_policy,
    uniform_policy,
)
from .errors import CutError, PinnedGroupWarning, PruningError, UnsupportedModelError
from .graph import ChannelGroup, DependencyGraph
from .models import build_model, list_models

__all__ = [
    "ChannelGroup",
    "CutError",
    "CutOutcome",
    "DependencyGraph",
    "PinnedGroupWarning",
    "Policy",
    "PruningError",
    "UnsupportedModelError",
    "build_model",
    "channel_groups",
    "cut_model",
    "global_policy",
    "kept_channels",
    "list_models",
    "prune",
    "resolve_policy",
    "uniform_policy",
]
