"""The `secateurs` command line, the top layer: it calls down into the service (server, tokens,
the REST client), workers (the job pipeline), search and pruning (the engine commands), and
nothing below imports it. Each command group lives in its own module with a
`register(subparsers)` function; errors a user can fix become one line and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .common import CliError, run_command

# Modules under secateurs that add commands, in --help order.
COMMAND_MODULES = ["engine", "unstructured", "search", "slimmable", "server", "jobs"]

# The commands of the modules that do not load the engine (torch, seconds to import): the server
# and the REST client's. Such a command builds a parser of its module alone, so `secateurs status`
# answers in a fraction of a second.
LIGHT_COMMANDS = {
    "serve": "server",
    "token": "server",
    **dict.fromkeys(("submit", "jobs", "status", "watch", "cancel", "fetch", "datasets", "upload"), "jobs"),
}


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the commands of `modules` (default: every command) registered."""
    parser = argparse.ArgumentParser(
        prog="secateurs", description="Prune convolutional networks: search, cut, fine-tune, export."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `secateurs` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    module = LIGHT_COMMANDS.get(argv[0]) if argv else None  # the command comes first: no options precede it
    parser = build_parser([module] if module else COMMAND_MODULES)
    args = parser.parse_args(argv)
    return run_command(args.func, args)


__all__ = ["CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
