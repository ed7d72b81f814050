"""Helpers for the service tests (no tests here; the `db_url`, `pg_url` and `store` fixtures
are in conftest.py): a fresh PostgreSQL schema per use, concurrent claimers, and a briefly
trained model."""

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


def claim_concurrently(db_url: str, claimers: int = 6, team_limit: int = 0) -> list[int]:
    """`claimers` threads, each a scheduler with its own engine, claim from one queue at once
    (released together by a barrier) until none gets a job; returns the ids claimed, in order."""
    import threading

    from service.store import Store

    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(claimers)

    def claim_all() -> None:
        s = Store(db_url)
        barrier.wait()
        try:
            while (got := s.claim_next(team_limit=team_limit)) is not None:
                with lock:
                    claimed.append(got[0].id)
        finally:
            s.dispose()

    threads = [threading.Thread(target=claim_all) for _ in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return claimed


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


SMALL_CONVNET = {"num_classes": 10, "in_channels": 1, "input_size": 16, "width": 0.25}
"""A convnet whose weights file (about 40 kB) fits the tests' small upload limits."""


def upload_small_convnet(client, headers: dict[str, str]):
    """POST /v1/models with a freshly built (untrained) SMALL_CONVNET as safetensors; the response."""
    import json

    from safetensors.torch import save as st_save

    from pruning.models import build_model

    weights = st_save({k: v.contiguous() for k, v in build_model("convnet", **SMALL_CONVNET).state_dict().items()})
    return client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(SMALL_CONVNET)},
        files={"file": ("m.safetensors", weights)},
        headers=headers,
    )
