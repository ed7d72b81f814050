"""Errors the engine raises for bad input; callers (CLI, service) turn them into one-line messages."""


class PruningError(ValueError):
    """Bad input to the engine: an unknown name, a rate out of range, a file that is missing."""


class UnsupportedModelError(PruningError):
    """The dependency graph cannot follow a layer or operation of the model."""


class CutError(PruningError):
    """A cut network failed its check (a forward on the example input, output shape unchanged);
    `group` is the channel group whose cut broke it and `layers` that group's layers."""

    def __init__(self, message: str, group: str | None = None, layers: list[str] | None = None) -> None:
        super().__init__(message)
        self.group = group
        self.layers = list(layers or [])


class PinnedGroupWarning(UserWarning):
    """A channel group cannot be cut correctly and is kept whole; the message names it and says why."""
