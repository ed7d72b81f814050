"""Helpers shared by CLI commands: clear one-line errors, progress bars on stderr, JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from service.client import ClientError

if TYPE_CHECKING:  # tqdm loads only when a bar is shown
    from tqdm import tqdm


class CliError(Exception):
    """An error to show the user as one line (exit status 2)."""


# The engine's error classes, by module: a command that never loaded the engine (torch) cannot
# have raised them, so they are looked up among the loaded modules, not imported.
ENGINE_ERRORS = {"pruning.errors": "PruningError", "search.base": "SearchError"}


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix, shown as one line: ours, the client's, missing files and
    permissions, and the engine's when a command has loaded it."""
    engine = tuple(getattr(sys.modules[m], name) for m, name in ENGINE_ERRORS.items() if m in sys.modules)
    return (CliError, ClientError, FileNotFoundError, PermissionError, *engine)


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command, turning user errors into `secateurs: error: ...` on stderr, exit 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        rc = func(args)
    except user_errors() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"secateurs: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secateurs: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def progress_bar(total: float, desc: str, unit: str = "it") -> tqdm[NoReturn]:
    """A tqdm bar on stderr (stdout stays clean for `--json`)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)


def parse_value(text: str) -> Any:
    """An option value: JSON when it parses (numbers, true/false, lists), the string otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_kv(text: str) -> tuple[str, str]:
    """`key=value` → (key, value), with a clear error otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise CliError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()
