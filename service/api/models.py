"""`/v1/models`: upload trained weights for a zoo architecture (safetensors or a weights-only
`.pt` state dict; bounded size; SHA-256 stored). A file is accepted only if it loads, without
unpickling, into the named zoo model built with the given arguments."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from pruning.errors import PruningError
from pruning.export import load_weights
from pruning.intake import Intake, intake_program
from pruning.models import MODELS, build_model
from pruning.models.zoo import check_model_args
from workers.config import RowId

from ..config import Settings
from ..store import Store, as_utc
from ..store.tables import Model, Team
from ..submit import warm_program
from ..text import excerpt
from .deps import current_team, get_settings, get_store
from .errors import error_responses
from .limits import too_large

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 422))
PROGRAM_SUFFIX = ".pt2"
SUFFIXES = (".safetensors", ".pt", ".pth", PROGRAM_SUFFIX)
CHUNK = 1 << 20


class ModelOut(BaseModel):
    id: int
    kind: Literal["weights", "program"]
    zoo: str | None
    args: dict[str, Any]
    filename: str
    size: int
    sha256: str
    created_at: datetime

    @classmethod
    def of(cls, m: Model) -> ModelOut:
        return cls(
            id=m.id,
            kind="program" if m.path.endswith(PROGRAM_SUFFIX) else "weights",
            zoo=m.zoo or None,
            args=m.args,
            filename=m.filename,
            size=m.size,
            sha256=m.sha256,
            created_at=as_utc(m.created_at),
        )


def _parse_args(text: str) -> dict[str, Any]:
    try:
        args = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"args: not valid JSON ({exc.msg})") from exc
    if not isinstance(args, dict):
        raise HTTPException(422, "args: must be a JSON object of zoo model arguments")
    return args


def _check_args(zoo: str, args: dict[str, Any]) -> dict[str, Any]:
    """The zoo name and its arguments, checked before a byte of the file is read (422)."""
    if zoo not in MODELS:
        raise HTTPException(422, f"zoo: unknown model {zoo!r}; choose one of: {', '.join(MODELS.names())}")
    try:
        return check_model_args(zoo, args)
    except PruningError as exc:
        raise HTTPException(422, f"args: {exc}") from exc


def _validate_program(path: Path, max_bytes: int) -> Intake:
    """Convert and verify an uploaded `.pt2` (`pruning.intake`)."""
    try:
        return intake_program(path, max_bytes=4 * max_bytes)
    except PruningError as exc:
        raise HTTPException(422, f"file: {str(exc).replace(str(path), 'the uploaded file')}") from exc


def program_facts(intake: Intake) -> dict[str, Any]:
    """What is stored as an uploaded program's args: input shape (C, H, W), output shape (the
    first output's), every output's shape by name and the layers converted."""
    return {
        "input_shape": list(intake.input_shape),
        "output_shape": list(intake.output_shape),
        "outputs": {k: list(v) for k, v in intake.outputs.items()},
        "layers": intake.layers,
    }


def _validate(zoo: str, args: dict[str, Any], path: Path) -> None:
    try:
        load_weights(build_model(zoo, **args), path)
    except (PruningError, TypeError, ValueError) as exc:
        msg = str(exc).replace(str(path), "the uploaded file")
        raise HTTPException(422, f"file: {msg}") from exc


NAME_CHARS = 255
"""Longest file name an upload may carry (the column that stores it holds this many)."""


def upload_name(upload: UploadFile) -> str:
    """The uploaded file's base name as stored: 422 for one longer than `NAME_CHARS` or with a
    control character (a NUL byte, a newline), which neither a database column nor a one-line
    message can hold."""
    name = Path(upload.filename or "").name
    if len(name) > NAME_CHARS:
        raise HTTPException(422, f"file: its name is longer than {NAME_CHARS} characters ({excerpt(name)!r})")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise HTTPException(422, f"file: its name holds a control character ({excerpt(name)!r})")
    return name


async def _save_bounded(upload: UploadFile, dest_dir: Path, suffix: str, limit: int) -> tuple[Path, int, str]:
    """Copy the upload to a temp file, stopping at `limit` bytes (413)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=suffix)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, too_large(limit))
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp), size, digest.hexdigest()


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    summary="Upload trained weights for a zoo model, or a .pt2 program",
    responses=error_responses(400, 413),
)
async def upload_model(
    zoo: str | None = Form(None, description="zoo architecture of the weights, e.g. convnet (none with a .pt2)"),
    args: str = Form("{}", description="JSON object of the zoo model's arguments"),
    file: UploadFile = File(
        ..., description="safetensors or weights-only .pt state dict, or a torch.export program (.pt2)"
    ),
    team: Team = Depends(current_team),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> ModelOut:
    name = upload_name(file)
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise HTTPException(422, f"file: must be {', '.join(SUFFIXES)}, got {excerpt(name) or 'no name'!r}")
    program = suffix == PROGRAM_SUFFIX
    if program and (zoo or _parse_args(args)):
        raise HTTPException(422, "zoo: a .pt2 program carries its architecture and weights; give no zoo or args")
    if not program and not zoo:
        raise HTTPException(422, "zoo: required with a weights file (a .pt2 program needs none)")
    parsed = {} if zoo is None else _check_args(zoo, _parse_args(args))
    team_dir = settings.data_dir / "uploads" / str(team.id)
    tmp, size, sha = await _save_bounded(file, team_dir, suffix, settings.max_upload_bytes)
    intake: Intake | None = None
    try:
        if size == 0:
            raise HTTPException(422, "file: is empty")
        if zoo is None:
            intake = await run_in_threadpool(_validate_program, tmp, settings.max_upload_bytes)
            parsed = program_facts(intake)
        else:
            await run_in_threadpool(_validate, zoo, parsed, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    final = team_dir / f"{sha}{suffix if suffix in ('.safetensors', PROGRAM_SUFFIX) else '.pt'}"
    os.replace(tmp, final)
    if intake is not None:  # traced now, once (by the trace process), so a submit checks its target in milliseconds
        await run_in_threadpool(warm_program, final)
    m = store.add_model(team.id, zoo=zoo or "", args=parsed, filename=name, path=str(final), size=size, sha256=sha)
    return ModelOut.of(m)


@router.get("", response_model=list[ModelOut], summary="The team's uploaded models")
def list_models(team: Team = Depends(current_team), store: Store = Depends(get_store)) -> list[ModelOut]:
    return [ModelOut.of(m) for m in store.list_models(team.id)]


@router.get("/{model_id}", response_model=ModelOut, summary="One uploaded model", responses=error_responses(404))
def get_model(model_id: RowId, team: Team = Depends(current_team), store: Store = Depends(get_store)) -> ModelOut:
    m = store.get_model(team.id, model_id)
    if m is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {model_id} not found")
    return ModelOut.of(m)
