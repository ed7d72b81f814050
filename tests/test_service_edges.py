"""The service at its edges (issue 13), on SQLite and PostgreSQL: ids and query values beyond
what the columns hold, model arguments, strategy and evaluator options, the upload size limit
without Content-Length, rejected weight files, and an OpenAPI document that tells the truth."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings

BIG = 2**31  # one past PostgreSQL's int4
MINIMAL = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
}


@pytest.fixture
def edge_api(db_url, tmp_path):
    """A client on a scheduler-less app over each backend, a team's auth header and the app's store."""
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, scheduler=False, max_upload_bytes=100_000)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        store = app.state.store
        yield client, {"Authorization": f"Bearer {store.create_token('alpha')}"}, store


@pytest.mark.parametrize("job_id", [BIG, 2**63 - 1])
@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/v1/jobs/{}"),
        ("post", "/v1/jobs/{}/cancel"),
        ("get", "/v1/jobs/{}/candidates"),
        ("get", "/v1/jobs/{}/events"),
        ("get", "/v1/jobs/{}/artifacts"),
        ("get", "/v1/jobs/{}/artifacts/model.pt"),
        ("get", "/v1/models/{}"),
    ],
)
def test_ids_beyond_the_columns_are_not_found(edge_api, method, path, job_id):
    client, h, _ = edge_api
    r = client.request(method, path.format(job_id), headers=h)
    assert r.status_code == 404, r.text
    assert str(job_id) in r.json()["detail"]


@pytest.mark.parametrize("path", ["/v1/jobs/{}", "/v1/models/{}", "/v1/jobs/{}/events"])
@pytest.mark.parametrize("bad", [2**63, 10**30, 0, -1])
def test_ids_outside_the_declared_range_are_422(edge_api, path, bad):
    client, h, _ = edge_api
    r = client.get(path.format(bad), headers=h)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "query",
    [
        "/v1/jobs?offset=9.9e34",
        f"/v1/jobs?offset={BIG}",
        "/v1/jobs?offset=99999999999999999999999",
        f"/v1/jobs/1/candidates?after={BIG}",
        f"/v1/jobs/1/events?after={10**40}",
    ],
)
def test_query_values_beyond_the_columns_are_422(edge_api, query):
    client, h, _ = edge_api
    r = client.get(query, headers=h)
    assert r.status_code == 422, r.text
    assert ("offset" in r.json()["detail"]) or ("after" in r.json()["detail"])


def test_an_upload_id_beyond_the_column_is_a_clean_422(edge_api):
    client, h, store = edge_api
    r = client.post("/v1/jobs", json={**MINIMAL, "model": {"upload": BIG}}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"model.upload: model {BIG} not found"
    r = client.post("/v1/jobs", json={**MINIMAL, "model": {"upload": 2**63}}, headers=h)
    assert r.status_code == 422, r.text
    assert "model.upload" in r.json()["detail"]
    assert store.list_jobs(1)[1] == 0
