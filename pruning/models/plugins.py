"""Architectures from installed packages: each entry point in the group `secateurs.models`
names a factory (`acme.resnet_se = acme_nets.models:resnet_se` in the package's metadata) that
joins the zoo under the entry point's name, so a cluster image with a team's package installed
runs `{"zoo": "acme.resnet_se"}` like a built-in model. `pruning.models` loads them once, after
the built-in models; a package that fails to load is skipped with a warning, never the zoo."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from .zoo import MODELS

GROUP = "secateurs.models"
log = logging.getLogger(__name__)


def load_entry_points(group: str = GROUP) -> list[str]:
    """Register the factories of the group's entry points not yet in the zoo; returns their names.
    A name the zoo already has, a factory that fails to import or is not callable: skipped, logged."""
    added: list[str] = []
    for ep in entry_points(group=group):
        if ep.name in MODELS:
            if getattr(MODELS.get(ep.name), "__module__", None) != ep.module:
                log.warning("entry point %s (%s) skipped: the zoo already has a model of that name", ep.name, ep.value)
            continue
        try:
            factory = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the zoo (and the service) down
            log.warning("entry point %s (%s) skipped: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
            continue
        if not callable(factory):
            log.warning("entry point %s (%s) skipped: not a callable model factory", ep.name, ep.value)
            continue
        MODELS.register(ep.name, factory)
        added.append(ep.name)
    return added
