"""The pruning engine: zoo, data, dependency graph and cutting, criteria, masks, counting,
BN recalibration, training and export. No service code lives here."""

from .cut import Policy, channel_groups, global_policy, kept_channels, prune, resolve_policy, uniform_policy
from .errors import PruningError, UnsupportedModelError
from .graph import ChannelGroup, DependencyGraph
from .models import build_model, list_models

__all__ = [
    "ChannelGroup",
    "DependencyGraph",
    "Policy",
    "PruningError",
    "UnsupportedModelError",
    "build_model",
    "channel_groups",
    "global_policy",
    "kept_channels",
    "list_models",
    "prune",
    "resolve_policy",
    "uniform_policy",
]
