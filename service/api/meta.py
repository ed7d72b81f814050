"""`/v1/strategies`, `/v1/evaluators`, `/v1/zoo`, `/v1/me`: what a job spec may name, and who the token belongs to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ..config import Settings
from ..store.tables import Team
from .deps import Caller, current_caller, current_team, get_settings
from .errors import error_responses

router = APIRouter(prefix="/v1", tags=["meta"], responses=error_responses(401))


class Limits(BaseModel):
    """The server's limits on what a client sends (413 above each), so it can check before sending."""

    max_upload_bytes: int = Field(description="largest weights file or .pt2 program (POST /v1/models)")
    max_dataset_upload_bytes: int = Field(description="largest data set archive (POST /v1/datasets)")
    max_dataset_bytes: int = Field(description="most bytes a data set archive may unpack to")
    max_dataset_files: int = Field(description="most files a data set archive may hold")
    max_image_pixels: int = Field(description="largest image (width x height) in a data set archive")
    max_spec_bytes: int = Field(description="largest job spec (POST /v1/jobs body)")


class MeOut(BaseModel):
    team: str
    id: int
    admin: bool
    limits: Limits


@router.get(
    "/me",
    response_model=MeOut,
    summary="The team the token belongs to, whether the token is an admin's, and the server's size limits",
)
def me(caller: Caller = Depends(current_caller), settings: Settings = Depends(get_settings)) -> MeOut:
    limits = Limits(**{name: getattr(settings, name) for name in Limits.model_fields})
    return MeOut(team=caller.team.name, id=caller.team.id, admin=caller.admin, limits=limits)


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
