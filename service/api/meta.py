"""`/v1/strategies`, `/v1/evaluators`, `/v1/zoo`, `/v1/me`: what a job spec may name, and who the token belongs to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ..store.tables import Team
from .deps import Caller, current_caller, current_team
from .errors import error_responses

router = APIRouter(prefix="/v1", tags=["meta"], responses=error_responses(401))


@router.get("/me", summary="The team the token belongs to, and whether the token is an admin's")
def me(caller: Caller = Depends(current_caller)) -> dict:
    return {"team": caller.team.name, "id": caller.team.id, "admin": caller.admin}


class Choice(BaseModel):
    """A strategy or an evaluator a job may name, and its options as JSON Schema (types, ranges,
    defaults): what `strategy.options` / `evaluator.options` accept, checked at submit."""

    name: str
    default_evaluator: str | None = Field(None, description="the evaluator a job uses when it names none (strategies)")
    options: dict[str, Any] = Field(description="JSON Schema of the options object")


@router.get("/strategies", response_model=list[Choice], summary="Strategies a job may use, with their options' schemas")
def strategies(team: Team = Depends(current_team)) -> list[Choice]:
    from search.registry import list_strategies, strategy_class, strategy_options

    return [
        Choice(
            name=n,
            default_evaluator=strategy_class(n).default_evaluator,
            options=strategy_options(n).model_json_schema(),
        )
        for n in list_strategies()
    ]


@router.get("/evaluators", response_model=list[Choice], summary="Evaluators a job may use, with their options' schemas")
def evaluators(team: Team = Depends(current_team)) -> list[Choice]:
    from search.evaluators import evaluator_options, list_evaluators

    return [Choice(name=n, options=evaluator_options(n).model_json_schema()) for n in list_evaluators()]


@router.get("/zoo", summary="Architectures models may use")
def zoo(team: Team = Depends(current_team)) -> list[str]:
    from pruning.models import list_models

    return list_models()
