"""`OPTIONS` on every API path, and an `Allow` header that lists every method a path has.
Starlette answers a method a path lacks with the `Allow` of the first route it matched only
(`POST` on `/v1/jobs`, though `GET` is there too): `Options` answers OPTIONS with 204 and the
whole list, and `method_not_allowed` corrects the `Allow` of a 405 the same way."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(scope: Scope) -> list[str]:
    """Every method some route of the app fully matches on this path (asked of the routes
    themselves, one method at a time, so included routers answer too), then OPTIONS; just
    OPTIONS when no route has the path."""
    routes = scope["app"].router.routes
    found = [m for m in ORDER[:-1] if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]
    return [*found, "OPTIONS"]


class Options:
    """ASGI middleware: `OPTIONS` on a path some route has is 204 with `Allow` (no token needed:
    it says what the API offers, nothing of a team's data); any other request passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            allowed = allowed_methods(scope)
            if len(allowed) > 1:
                await Response(status_code=204, headers={"Allow": ", ".join(allowed)})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def method_not_allowed(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an HTTP error, with a 405's `Allow` listing every method of the path."""
    if exc.status_code == 405:
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request.scope))}
    return await http_exception_handler(request, exc)
