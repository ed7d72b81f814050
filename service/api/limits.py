"""Upload bodies bounded as they arrive. Starlette parses a multipart form, spooling its files,
before an endpoint runs, so a size check inside the endpoint comes after the whole body was
read; `UploadLimit` counts the bytes on their way in instead."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOADS: dict[str, str] = {"/v1/models": "max_upload_bytes", "/v1/datasets": "max_dataset_upload_bytes"}
"""The upload routes (POST) and the setting that holds each one's file size limit."""

FORM_SLACK = 64 << 10
"""Bytes an upload's body may hold beyond the file: multipart headers and the form's other fields."""


CLOSE = {"Connection": "close"}
"""On a 413 the server closes the connection, so it reads no more of a body the client keeps sending."""


def too_large(limit: int) -> str:
    """The one-line 413 message for a file over `limit` bytes."""
    return f"file: larger than the {limit:,} byte limit"


class UploadLimit:
    """ASGI middleware bounding the bodies of the `UPLOADS` routes as they arrive: a declared
    Content-Length over the limit is refused unread, and a body without one (chunked) is
    counted chunk by chunk and cut off at the limit (plus `FORM_SLACK`), so no more than that
    is ever read. 413 either way, as JSON, and the connection closed; the endpoint then holds the file itself to the
    exact limit while saving it (`models._save_bounded`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        setting = UPLOADS.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if setting is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit: int = getattr(scope["app"].state.settings, setting)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FORM_SLACK:
            await JSONResponse({"detail": too_large(limit)}, status_code=413, headers=CLOSE)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit + FORM_SLACK:
                raise HTTPException(413, too_large(limit), headers=CLOSE)  # answered by the app's handler, as JSON
            return message

        await self.app(scope, counted, send)
