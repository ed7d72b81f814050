"""FastAPI dependencies: the store and settings held by the app, and the caller (team and
admin flag) from `Authorization: Bearer <token>` (401 without a live token)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..store import Store
from ..store.tables import INT_MAX, Team

After = Annotated[int, Query(ge=0, le=INT_MAX, description="only rows with a larger sequence number")]
"""`?after=`: a sequence number, bounded by the column that holds them (larger ones are a 422)."""

Offset = Annotated[int, Query(ge=0, le=INT_MAX, description="rows to skip")]
"""`?offset=` of a paged list, bounded like the ids it pages over."""

_bearer = HTTPBearer(auto_error=False, description="a team token from `secateurs token create`")


async def get_store(request: Request) -> Store:
    """The app's store (async: no I/O, so no trip through the thread pool)."""
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    """The app's settings (async: no I/O)."""
    return request.app.state.settings


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's team, and whether the token is an admin's."""

    team: Team
    admin: bool


async def current_caller(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer), store: Store = Depends(get_store)
) -> Caller:
    """The bearer token's team and admin flag; 401 if it is missing, unknown or revoked. A token
    checked within `SECATEURS_TOKEN_CACHE_SECONDS` is answered from memory; otherwise the
    database call runs in the thread pool, never on the event loop."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = store.cached_caller(creds.credentials) or await run_in_threadpool(store.caller_for_token, creds.credentials)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(*found)


async def current_team(caller: Caller = Depends(current_caller)) -> Team:
    """The team owning the bearer token (see `current_caller`)."""
    return caller.team
