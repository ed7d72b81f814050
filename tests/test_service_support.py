"""Helpers for the service tests (no tests here; the `db_url`, `pg_url` and `store` fixtures
are in conftest.py): a fresh PostgreSQL schema per use, and a briefly trained model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("SECATEURS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""The PostgreSQL database the tests use (each in its own schema); SECATEURS_TEST_DATABASE_URL overrides it."""


def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; the schema is dropped on exit."""
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {make_url(dsn)!r} is not reachable (start it, e.g. with .ci/run, or point "
            f"SECATEURS_TEST_DATABASE_URL at one): {exc}"
        )
    conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


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
