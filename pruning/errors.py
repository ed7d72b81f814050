"""Errors the engine raises for bad input; callers (CLI, service) turn them into one-line messages."""


class PruningError(ValueError):
    """Bad input to the engine: an unknown name, a rate out of range, a file that is missing."""


class UnsupportedModelError(PruningError):
    """The dependency graph cannot follow a layer or operation of the model."""
