"""`secateurs serve` (the API, scheduler and a local Ray unless RAY_ADDRESS is set) and
`secateurs token create|revoke` (admin commands working on the database directly)."""

from __future__ import annotations

import argparse
import sys


def _store():
    from service.config import get_settings
    from service.store import Store

    settings = get_settings()
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.migrate()
    return store


def cmd_serve(args: argparse.Namespace) -> int:
    """Start uvicorn on the app; Ctrl-C stops it (and the local Ray it started)."""
    import uvicorn

    from service.api import create_app
    from service.config import get_settings

    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    print(
        f"secateurs: serving on http://{host}:{port} "
        f"(database {settings.db_url.split('@')[-1]}, data {settings.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Make a team token (an admin's with --admin); the token alone is the last stdout line."""
    from .common import CliError

    team = args.team.strip()
    if not team or len(team) > 64:
        raise CliError("--team must be 1-64 characters")
    token = _store().create_token(team, admin=args.admin)
    kind = "admin token" if args.admin else "token"
    print(f"{kind} for team {team!r} (shown once; only its hash is stored):", file=sys.stderr)
    print(token, flush=True)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token."""
    from .common import CliError

    if not _store().revoke_token(args.token):
        raise CliError("no such live token")
    print("revoked")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` and `token`."""
    p = subparsers.add_parser("serve", help="run the API server with its scheduler (SQLite + local Ray by default)")
    p.add_argument("--host", default=None, help="bind address (default SECATEURS_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default SECATEURS_PORT or 8000)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    t = subparsers.add_parser("token", help="team tokens (admin: works on the database directly)")
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("create", help="make a token for a team; prints it alone on the last line")
    c.add_argument("--team", required=True)
    c.add_argument("--admin", action="store_true", help="may give jobs a priority above the default (0)")
    c.set_defaults(func=cmd_token_create)
    r = tsub.add_parser("revoke", help="revoke a token")
    r.add_argument("token")
    r.set_defaults(func=cmd_token_revoke)
