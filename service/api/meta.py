"""`/v1/strategies`, `/v1/evaluators`, `/v1/zoo`, `/v1/me`: what a job spec may name, and who the token belongs to."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..store.tables import Team
from .deps import Caller, current_caller, current_team

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get("/me", summary="The team the token belongs to, and whether the token is an admin's")
def me(caller: Caller = Depends(current_caller)) -> dict:
    return {"team": caller.team.name, "id": caller.team.id, "admin": caller.admin}


@router.get("/strategies", summary="Strategy names a job may use")
def strategies(team: Team = Depends(current_team)) -> list[str]:
    from search.registry import list_strategies

    return list_strategies()


@router.get("/evaluators", summary="Evaluator names a job may use")
def evaluators(team: Team = Depends(current_team)) -> list[str]:
    from search.evaluators import list_evaluators

    return list_evaluators()


@router.get("/zoo", summary="Architectures models may use")
def zoo(team: Team = Depends(current_team)) -> list[str]:
    from pruning.models import list_models

    return list_models()
