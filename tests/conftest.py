"""Shared fixtures: the digits data, a one-thread switch (kept cheap for 2-core CI), and the
service's databases: a migrated `store` on SQLite and on PostgreSQL (a fresh schema each time,
in the database SECATEURS_TEST_DATABASE_URL names; see test_service_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from test_service_support import pg_schema_url

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def digits():
    """The digits data at 16x16, split once per test session."""
    from pruning.data import load_dataset

    return load_dataset("digits", input_size=16, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (opt in with `pytest.mark.usefixtures`):
    on a shared, busy 2-core machine it runs small CPU models several times faster than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a new, empty schema, dropped afterwards (fails if PostgreSQL is down)."""
    yield from pg_schema_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A database URL for each backend: a SQLite file in tmp_path, then a PostgreSQL schema."""
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
