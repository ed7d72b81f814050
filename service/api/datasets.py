"""`/v1/datasets`: upload an image folder (classification), a mask folder (segmentation:
`images/` + `masks/`) or a YOLO or COCO layout (detection) as an archive (`.tar`, `.tar.gz`,
`.zip`), stored per team like models and used in a job as `data: {upload: ID}`. The archive is
unpacked safely and checked (`service.archive`): a refused one answers 413 (over a limit) or 422
with one line, and nothing is kept."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from workers.config import RowId

from ..archive import ArchiveError, DatasetFacts, Limits, archive_suffix, move_tree, unpack_dataset
from ..config import Settings
from ..store import Store, as_utc
from ..store.tables import Dataset, Team
from .deps import current_team, get_settings, get_store
from .errors import error_responses
from .models import _save_bounded, upload_name

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401, 422))


class DatasetOut(BaseModel):
    id: int
    filename: str
    size: int
    sha256: str
    layout: str
    classes: list[str]
    num_classes: int
    in_channels: int
    images: dict[str, int]
    task: str
    boxes: dict[str, Any] | None = None  # detection: format, objects, and the boxes clipped or skipped
    created_at: datetime

    @classmethod
    def of(cls, d: Dataset) -> DatasetOut:
        return cls(
            id=d.id,
            filename=d.filename,
            size=d.size,
            sha256=d.sha256,
            layout=d.layout,
            classes=list(d.classes),
            num_classes=len(d.classes),
            in_channels=d.in_channels,
            images=dict(d.images),
            task=d.task,
            boxes=d.boxes,
            created_at=as_utc(d.created_at),
        )


def limits(settings: Settings) -> Limits:
    """The archive limits the settings give."""
    return Limits(settings.max_dataset_bytes, settings.max_dataset_files, settings.max_image_pixels)


def _unpack(archive: Path, suffix: str, work: Path, final_dir: Path, bounds: Limits) -> DatasetFacts:
    """Unpack into `work` and move the image folder to `final_dir` (`work` is removed)."""
    try:
        facts = unpack_dataset(archive, suffix, work / "tree", bounds)
        facts.root = move_tree(facts.root, final_dir)
        return facts
    finally:
        shutil.rmtree(work, ignore_errors=True)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload an image folder, mask folder or detection (YOLO, COCO) archive",
    responses=error_responses(400, 413),
)
async def upload_dataset(
    file: UploadFile = File(
        ...,
        description="a .tar, .tar.gz or .zip of <class>/* or train/<class>/* (+ val/), "
        "or for segmentation images/ + masks/ (or train/images/ + train/masks/, + val/, test/), "
        "or for detection a YOLO (images/ + labels/, data.yaml) or COCO (annotations/instances_<split>.json) layout",
    ),
    team: Team = Depends(current_team),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> DatasetOut:
    limit = settings.max_dataset_upload_bytes  # the body was counted on arrival (limits.UploadLimit)
    name = upload_name(file)
    try:
        suffix = archive_suffix(name)
    except ArchiveError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    team_dir = settings.data_dir / "datasets" / str(team.id)
    tmp, size, sha = await _save_bounded(file, team_dir, suffix, limit)
    work = Path(tempfile.mkdtemp(dir=team_dir, prefix=".unpack-"))
    try:
        if size == 0:
            raise HTTPException(422, "file: is empty")
        facts = await run_in_threadpool(_unpack, tmp, suffix, work, team_dir / sha, limits(settings))
    except ArchiveError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    fields: dict[str, Any] = {
        "filename": name,
        "path": str(facts.root),
        "size": size,
        "sha256": sha,
        "layout": facts.layout,
        "classes": facts.classes,
        "in_channels": facts.in_channels,
        "images": facts.images,
        "task": facts.task,
        "boxes": facts.boxes,
    }
    return DatasetOut.of(store.add_dataset(team.id, **fields))


@router.get("", response_model=list[DatasetOut], summary="The team's uploaded data sets")
def list_datasets(team: Team = Depends(current_team), store: Store = Depends(get_store)) -> list[DatasetOut]:
    return [DatasetOut.of(d) for d in store.list_datasets(team.id)]


@router.get("/{dataset_id}", response_model=DatasetOut, summary="One uploaded data set", responses=error_responses(404))
def get_dataset(dataset_id: RowId, team: Team = Depends(current_team), store: Store = Depends(get_store)) -> DatasetOut:
    d = store.get_dataset(team.id, dataset_id)
    if d is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data set {dataset_id} not found")
    return DatasetOut.of(d)
