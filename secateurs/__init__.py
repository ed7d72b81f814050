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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="secateurs", description="Prune convolutional networks: search, cut, fine-tune, export."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `secateurs` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.func, args)


__all__ = ["CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
