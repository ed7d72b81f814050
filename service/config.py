"""Service configuration from `SECATEURS_*` environment variables (pydantic-settings), so one
image runs as an API process, a scheduler or in tests with nothing but env vars changed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path("~/.local/share/secateurs").expanduser()


class Settings(BaseSettings):
    """Every knob of the service; each field `x` is read from `SECATEURS_X`."""

    model_config = SettingsConfigDict(env_prefix="SECATEURS_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="uploads, job outputs and the default SQLite file"
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/secateurs.db")
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(
        2 << 30, description="largest accepted weights file or .pt2 program (VGG-16 as a .pt2 is 528 MB)"
    )
    max_spec_bytes: int = Field(
        1 << 20, ge=1024, description="largest accepted POST /v1/jobs body, the job spec (413 above)"
    )
    max_dataset_upload_bytes: int = Field(1 << 30, description="largest accepted data set archive")
    max_dataset_bytes: int = Field(4 << 30, description="most bytes a data set archive may unpack to")
    max_dataset_files: int = Field(200_000, description="most files a data set archive may hold")
    max_image_pixels: int = Field(40_000_000, description="largest image (width x height) in a data set archive")
    allowed_data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="comma-separated folders data paths must lie under"
    )
    max_concurrent_jobs: int = Field(2, description="jobs one scheduler runs at a time")
    token_cache_seconds: float = Field(
        2.0,
        ge=0,
        description="seconds the API trusts a checked token (a CLI revoke holds after at most this)",
    )
    max_running_per_team: int = Field(
        0, ge=0, description="running jobs one team may have over all schedulers; 0: no limit"
    )
    trace_wait_seconds: float = Field(
        0.0,
        ge=0,
        le=60,
        description="how long a submit waits for its network's trace to check the target (a 422 now), beside "
        "0.025 s for the trace process to answer; past it the job is accepted and checks the target itself "
        "before training",
    )
    scheduler: bool = Field(True, description="run the scheduler inside the API process")
    poll_seconds: float = Field(1.0, description="scheduler loop period")
    heartbeat_seconds: float = Field(5.0, description="how often a running job writes its heartbeat")
    stale_after_seconds: float = Field(60.0, description="a running job silent this long is requeued and resumed")
    max_attempts: int = Field(3, description="runs of one job (first + resumes) before it is failed")
    cancel_grace_seconds: float = Field(
        3.0, description="after a cancel, how long a job may take to stop before it is killed"
    )
    eval_workers: int = Field(2, description="Ray actors a job fans candidate evaluations out to")
    ray_num_cpus: int | None = Field(None, description="CPUs of the local Ray the server starts (RAY_ADDRESS unset)")

    @field_validator("allowed_data_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: object) -> object:
        if isinstance(v, str):
            return [Path(p.strip()).expanduser() for p in v.split(",") if p.strip()]
        return v

    @property
    def db_url(self) -> str:
        """The database URL in effect (SQLite under the data dir unless set)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'secateurs.db'}"

    def ensure_dirs(self) -> None:
        """Create the data dir and its sub-folders."""
        for sub in ("", "uploads", "jobs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
