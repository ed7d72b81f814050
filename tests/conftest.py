"""Shared fixtures: the digits data, networks trained on it once per session (modules take
copies, so no test sees another's changes), a one-thread switch (kept cheap for 2-core CI), and
the service's databases: a migrated `store` on SQLite and on PostgreSQL (a fresh schema each
time, in the database SECATEURS_TEST_DATABASE_URL names; see test_service_support.py)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_service_support import pg_schema_url

# At most two intra-op threads (2-core CI), and one per process when pytest-xdist runs two
# workers side by side (`make test`), so the workers do not fight over the same cores.
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test (real servers, Ray clusters, a browser) run first, each file's
    tests in their order: under `make test`'s two workers they start early instead of leaving
    one worker running them alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def corpus_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the corpus networks' `.pt2` exports (`corpus.exported`), shared by the test
    processes of one run (under `make test`'s workers, their common temporary root): a network
    is exported once per run, however many files upload or convert it."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "corpus-exports"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def digits():
    """The digits data at 16x16, split once per test session."""
    from pruning.data import load_dataset

    return load_dataset("digits", input_size=16, seed=0)


@pytest.fixture(scope="session")
def _resnet20_digits(digits) -> torch.nn.Module:
    """resnet20 trained for 1 epoch on digits at 16 px (seeded), trained once per session."""
    from pruning import build_model
    from pruning.train import TrainConfig, train

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=16)
    train(model, digits.train, TrainConfig(epochs=1, lr=0.05, seed=0), device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def resnet20_digits(_resnet20_digits) -> torch.nn.Module:
    """A module's own copy of the session's 1-epoch resnet20 (in eval mode)."""
    return copy.deepcopy(_resnet20_digits).eval()


@pytest.fixture(scope="session")
def _slimmable_convnet_digits(digits) -> torch.nn.Module:
    """A universally slimmable convnet (widths 0.25-1.0) trained for 3 epochs on digits with
    the sandwich rule and inplace distillation (seeded), trained once per session."""
    from pruning import build_model
    from pruning.slimmable import SlimTrainConfig, make_slimmable, train_slimmable

    args = {"num_classes": 10, "in_channels": 1, "input_size": 16}
    torch.manual_seed(0)
    net = make_slimmable(
        build_model("convnet", **args),
        (1, 16, 16),
        [0.25, 0.5, 0.75, 1.0],
        universal=True,
        zoo="convnet",
        zoo_args=args,
    )
    train_slimmable(net, digits.train, SlimTrainConfig(epochs=3, seed=0), device="cpu")
    return net


@pytest.fixture(scope="module")
def slimmable_convnet_digits(_slimmable_convnet_digits) -> torch.nn.Module:
    """A module's own copy of the session's trained universally slimmable convnet."""
    return copy.deepcopy(_slimmable_convnet_digits)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (opt in with `pytest.mark.usefixtures`):
    on a shared, busy 2-core machine it runs small CPU models several times faster than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tracer(monkeypatch):
    """A trace process of the test's own, as after a server restart (nothing traced), closed after it."""
    from service import submit
    from service.tracer import Tracer

    fresh = Tracer()
    monkeypatch.setattr(submit, "TRACER", fresh)
    yield fresh
    fresh.close()


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
