"""The one error body of the API and its place in the OpenAPI document. Every 4xx answer is
`{"detail": "<one line>"}`; a 422 from request validation also lists each field in `errors`.
`error_responses(...)` declares those answers on routes, so the document says what clients get."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..text import excerpt


class FieldError(BaseModel):
    """One invalid input of a request."""

    loc: list[str | int] = Field(description="where: body, query, path or header, then the field's path")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """What every 4xx answer holds."""

    detail: str = Field(description="what is wrong, in one line (each bad field named)")
    errors: list[FieldError] | None = Field(None, description="each invalid input (422 from validation only)")


MEANING: dict[int, str] = {
    400: "the request body cannot be parsed (e.g. a malformed multipart form)",
    401: "missing, unknown or revoked bearer token",
    404: "no such resource for this team",
    413: "the upload is larger than the server's limit",
    422: "invalid input: `detail` names each bad field and why",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these status codes, each with the `ErrorOut` body."""
    return {code: {"model": ErrorOut, "description": MEANING[code]} for code in codes}


MAX_ERRORS = 20
"""Most invalid inputs one 422 lists (the count of the rest is given)."""

MSG_CHARS = 400
"""Most characters of one field's message (messages quote the input: an unknown key, a value)."""


def _loc(loc: tuple[Any, ...]) -> list[str | int]:
    return [p if isinstance(p, int) else excerpt(str(p)) for p in loc]


def _where(loc: list[str | int]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with `detail` as one line naming each bad field and why, and the fields in `errors`:
    at most `MAX_ERRORS` of them, each message and name cut to a bounded excerpt, so the
    answer stays small whatever the size of the input."""
    lines, fields = [], []
    errors = list(exc.errors())
    for e in errors[:MAX_ERRORS]:
        msg = excerpt(str(e.get("msg", "invalid")).removeprefix("Value error, "), MSG_CHARS)
        if e.get("type") == "json_invalid":
            msg = f"malformed JSON: {excerpt(str((e.get('ctx') or {}).get('error', msg)), MSG_CHARS)}"
        loc = _loc(tuple(e.get("loc", ())))
        lines.append(f"{_where(loc)}: {msg}")
        fields.append(FieldError(loc=loc, msg=excerpt(str(e.get("msg")), MSG_CHARS), type=str(e.get("type"))))
    if len(errors) > MAX_ERRORS:
        lines.append(f"and {len(errors) - MAX_ERRORS} more")
    body = ErrorOut(detail="; ".join(lines), errors=fields)
    return JSONResponse(status_code=422, content=body.model_dump(mode="json"))
