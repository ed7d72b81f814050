"""Request bodies bounded as they arrive: uploads and job specs. Starlette parses a multipart
form, spooling its files, before an endpoint runs, so a size check inside the endpoint comes
after the whole body was read; `UploadLimit` counts the bytes on their way in instead."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Bound:
    """A bounded POST route: the setting holding its limit, what the 413 names, and the bytes
    a body may hold beyond the limit (a multipart form's headers and other fields)."""

    setting: str
    what: str
    slack: int


FORM_SLACK = 64 << 10
"""Bytes an upload's body may hold beyond the file: multipart headers and the form's other fields."""

BOUNDED: dict[str, Bound] = {
    "/v1/models": Bound("max_upload_bytes", "file", FORM_SLACK),
    "/v1/datasets": Bound("max_dataset_upload_bytes", "file", FORM_SLACK),
    "/v1/jobs": Bound("max_spec_bytes", "body", 0),
}
"""The POST routes whose bodies are bounded as they arrive: the uploads, and a job spec."""


CLOSE = {"Connection": "close"}
"""On a 413 the server closes the connection, so it reads no more of a body the client keeps sending."""


def too_large(limit: int, what: str = "file") -> str:
    """The one-line 413 message for a file (or body) over `limit` bytes."""
    return f"{what}: larger than the {limit:,} byte limit"


class UploadLimit:
    """ASGI middleware bounding the bodies of the `BOUNDED` routes as they arrive: a declared
    Content-Length over the limit is refused unread, and a body without one (chunked) is
    counted chunk by chunk and cut off at the limit (plus the route's slack), so no more than
    that is ever read. 413 either way, as JSON, and the connection closed; an upload's endpoint
    then holds the file itself to the exact limit while saving it (`models._save_bounded`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bound = BOUNDED.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if bound is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit: int = getattr(scope["app"].state.settings, bound.setting)
        message = too_large(limit, bound.what)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit + bound.slack:
            await JSONResponse({"detail": message}, status_code=413, headers=CLOSE)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message_in = await receive()
            seen += len(message_in.get("body", b""))
            if seen > limit + bound.slack:
                raise HTTPException(413, message, headers=CLOSE)  # answered by the app's handler, as JSON
            return message_in

        await self.app(scope, counted, send)
