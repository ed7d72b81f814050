"""The dashboard's router on its own (no browser): the page, its static files, nothing outside
`service/static/`, no third-party origin in the page, and the form's choices from the registries."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.dashboard import STATIC_DIR, router


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_index_is_served_with_a_same_origin_policy(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self'" in csp
    # Every script and stylesheet the page loads is a local /static path (works offline).
    refs = re.findall(r'(?:src|href)="([^"#]+)"', r.text)
    assert refs
    assert all(ref.startswith(("/static/", "/docs")) for ref in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert client.get(ref).status_code == 200, ref


def test_every_module_import_resolves_to_a_served_file(client):
    for js in STATIC_DIR.rglob("*.js"):
        if "vendor" in js.parts:
            continue
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', js.read_text()):
            path = (js.parent / target).resolve().relative_to(STATIC_DIR)
            assert client.get(f"/static/{path.as_posix()}").status_code == 200, (js.name, target)


def test_static_files_outside_the_folder_are_404(client):
    assert client.get("/static/../dashboard.py").status_code == 404
    assert client.get("/static/%2e%2e/dashboard.py").status_code == 404
    assert client.get("/static/%2e%2e%2f%2e%2e/pyproject.toml").status_code == 404
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/js").status_code == 404  # a folder, not a file


def test_bundled_chart_library_ships_with_its_licence(client):
    lib = client.get("/static/vendor/chart.umd.min.js")
    assert lib.status_code == 200
    assert "Chart.js" in lib.text[:400]
    assert "MIT" in (STATIC_DIR / "vendor" / "chart.js.LICENSE.md").read_text()


def test_form_choices_come_from_the_registries(client):
    from pruning.criteria import CRITERIA
    from pruning.data import DATASETS
    from pruning.runtime import RUNTIMES
    from pruning.tasks import list_tasks
    from search.target import KINDS
    from service.api.models import SUFFIXES as MODEL_SUFFIXES
    from service.archive import SUFFIXES as ARCHIVE_SUFFIXES
    from workers.status import FINAL, JobStatus

    got = client.get("/dashboard/choices.json").json()
    assert got == {
        "datasets": list(DATASETS),
        "criteria": sorted(CRITERIA),
        "targets": list(KINDS),
        "prune_schedules": ["one-shot", "iterative"],
        "streams": ["search", "last", "whole"],
        "runtimes": list(RUNTIMES),
        "tasks": list_tasks(),
        "score_labels": {"accuracy": "accuracy", "miou": "mIoU", "fidelity": "fidelity", "map": "mAP@[.5:.95]"},
        "statuses": list(JobStatus),
        "final": [s for s in JobStatus if s in FINAL],
        "uploads": {"models": {"suffixes": list(MODEL_SUFFIXES)}, "datasets": {"suffixes": list(ARCHIVE_SUFFIXES)}},
    }
    assert got["statuses"] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert got["final"] == ["succeeded", "failed", "cancelled"]
    assert got["tasks"][0] == "classification"


def test_upload_rules_name_the_app_settings_limits():
    """With the API's settings the choices carry each upload endpoint's size limit, so the form's
    help says what a larger file will be refused for."""
    from service.config import Settings

    app = FastAPI()
    app.state.settings = Settings(max_upload_bytes=12_345, max_dataset_upload_bytes=67_890, scheduler=False)
    app.include_router(router)
    uploads = TestClient(app).get("/dashboard/choices.json").json()["uploads"]
    assert uploads["models"]["max_bytes"] == 12_345
    assert uploads["datasets"]["max_bytes"] == 67_890
    assert ".pt2" in uploads["models"]["suffixes"]
    assert ".zip" in uploads["datasets"]["suffixes"]


def test_choices_are_made_once_per_app(monkeypatch):
    """Every dashboard that opens asks for the choices (fifty at once in a start-up storm): the
    JSON is made on the first request and served as it is after."""
    from service import dashboard

    made: list[object] = []
    real = dashboard.choices
    monkeypatch.setattr(dashboard, "choices", lambda request: made.append(request) or real(request))
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)
    first, second = (client.get("/dashboard/choices.json") for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.content == second.content
    assert first.json()["tasks"][0] == "classification"
    assert len(made) == 1


def test_choices_after_the_first_are_answered_ahead_of_the_routing(tmp_path):
    """In the service's app, once the choices are made, later requests for them are answered
    by `ChoicesFastPath` without entering the app behind it, with the same body and ETag, and a
    304 when the browser sends that ETag back; a POST or a query string goes on to the app."""
    import asyncio

    from service import dashboard
    from service.api import create_app
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    assert any(m.cls is dashboard.ChoicesFastPath for m in app.user_middleware)
    with TestClient(app) as client:
        first = client.get(dashboard.CHOICES_PATH)
    assert first.status_code == 200
    assert first.headers["etag"] == app.state.choices_etag

    entered: list[str] = []

    async def behind(scope, receive, send) -> None:
        entered.append(scope["method"])

    fast = dashboard.ChoicesFastPath(behind)

    def ask(method: str = "GET", query: bytes = b"", headers: list | None = None) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "app": app, "path": dashboard.CHOICES_PATH, "method": method,
                 "query_string": query, "headers": headers or []}  # fmt: skip
        asyncio.run(fast(scope, None, send))
        return sent

    start, body = ask()
    assert start["status"] == 200
    assert body["body"] == first.content
    assert dict(start["headers"])[b"etag"].decode() == first.headers["etag"]
    start, body = ask(headers=[(b"if-none-match", first.headers["etag"].encode())])
    assert (start["status"], body["body"]) == (304, b"")
    assert entered == []
    assert ask("POST") == []
    assert ask(query=b"x=1") == []
    assert entered == ["POST", "GET"]
