"""Conditional GETs for what dashboards and `secateurs watch` poll: each answer carries an
`ETag`, and a request whose `If-None-Match` names the current one gets `304 Not Modified`
with no body, so an unchanged poll costs the server no serialization and the client no
parsing. Endpoints raise `NotModified`; `not_modified_handler` (installed by the app) turns it
into the 304."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Request, Response

CACHE_CONTROL = "private, no-cache"
"""Answers are per team (private) and must be revalidated on every use (no-cache)."""

IfNoneMatch = Annotated[
    str | None,
    Header(description="the ETag of the answer the client already has: 304 with no body if it is still current"),
]

NOT_MODIFIED_RESPONSE: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the ETag in If-None-Match is still current (no body)"}
}
"""The 304 for `responses=` of an endpoint that takes `If-None-Match`."""


class NotModified(Exception):
    """The client's copy (ETag `etag`) is current: answer 304."""

    def __init__(self, etag: str) -> None:
        super().__init__(etag)
        self.etag = etag


def make_etag(*parts: object) -> str:
    """A strong ETag naming an answer by what determines it (ids, cursors, counters)."""
    return '"' + "-".join(str(p) for p in parts) + '"'


def body_etag(body: str | bytes) -> str:
    """A strong ETag for an answer known only by its content."""
    data = body.encode() if isinstance(body, str) else body
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """True if `If-None-Match` (`*` or a comma-separated list, weak `W/` forms included,
    compared weakly as RFC 9110 asks for GET) names `etag`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in if_none_match.split(","))


def check(response: Response, if_none_match: str | None, etag: str) -> None:
    """Raise `NotModified` if the client has `etag`; else put it on the 200 answer."""
    if matches(if_none_match, etag):
        raise NotModified(etag)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL


async def not_modified_handler(request: Request, exc: Exception) -> Response:
    """`NotModified` as a bodiless 304 with the ETag."""
    etag = exc.etag if isinstance(exc, NotModified) else ""
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
