"""Helpers for the service tests (no tests here): a migrated store on a temporary SQLite file
or in a fresh PostgreSQL schema, and a briefly trained model."""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; the schema is dropped on exit."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = PG_URL.replace("postgresql+psycopg", "postgresql")
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {dsn} is not reachable (start it, e.g. with .ci/run): {exc}")
    conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A database URL for each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from pg_schema_url()


@pytest.fixture
def store(db_url):
    """A migrated Store on each backend."""
    from service.store import Store

    s = Store(db_url)
    s.migrate()
    yield s
    s.dispose()


def train_digits_convnet(path, epochs: float = 1.0):
    """A convnet trained briefly on digits at 16 px, saved as safetensors; returns its args."""
    from pruning.data import load_dataset
    from pruning.export import save_weights
    from pruning.models import build_model
    from pruning.train import TrainConfig, train

    data = load_dataset("digits", input_size=16, seed=0)
    args = {"num_classes": 10, "in_channels": 1, "input_size": 16}
    model = build_model("convnet", **args)
    train(model, data.train, TrainConfig(epochs=epochs, lr=0.05, batch_size=64, seed=0))
    save_weights(model, path)
    return args
