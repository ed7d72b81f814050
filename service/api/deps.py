"""FastAPI dependencies: the store and settings held by the app, and the caller's team from
`Authorization: Bearer <token>` (401 without a live token)."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..store import Store
from ..store.tables import Team

_bearer = HTTPBearer(auto_error=False, description="a team token from `secateurs token create`")


def get_store(request: Request) -> Store:
    """The app's store."""
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def current_team(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer), store: Store = Depends(get_store)
) -> Team:
    """The team owning the bearer token; 401 if it is missing, unknown or revoked."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    team = store.team_for_token(creds.credentials)
    if team is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return team
