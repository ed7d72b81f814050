"""The command line builds only the parser a command needs: the server's and the REST client's
commands never load the engine (torch takes seconds to import), and answer the same as with
every command registered."""

from __future__ import annotations

import argparse
import subprocess
import sys

from secateurs import COMMAND_MODULES, LIGHT_COMMANDS, build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    return [tuple(a.option_strings) or (a.dest,) for a in parser._actions]


def test_each_light_command_parses_as_with_every_command_registered() -> None:
    full = _commands(build_parser())
    for module in set(LIGHT_COMMANDS.values()):
        light = _commands(build_parser([module]))
        # the table names every command its module adds, and nothing else
        assert set(light) == {c for c, m in LIGHT_COMMANDS.items() if m == module}
        for name, parser in light.items():
            assert _options(parser) == _options(full[name])
    assert set(LIGHT_COMMANDS.values()) <= set(COMMAND_MODULES)


def test_a_client_command_answers_without_loading_torch() -> None:
    code = (
        "import sys, secateurs; rc = secateurs.main(['status', '1', '--url', 'http://127.0.0.1:9']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr.strip().startswith("secateurs: error: cannot reach the Secateurs API")
    assert len(out.stderr.strip().splitlines()) == 1
