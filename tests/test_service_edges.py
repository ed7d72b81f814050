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


def _stored_files(tmp_path) -> list:
    return [p for p in (tmp_path / "data" / "uploads").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"width": 1e6}, "argument width: Input should be less than or equal to 2"),
        ({"num_classes": -1}, "argument num_classes: Input should be greater than or equal to 1"),
        ({"num_classes": 1.5}, "argument num_classes: Input should be a valid integer"),
        ({"input_size": 10**9}, "argument input_size"),
        ({"depth": 3}, "takes no argument(s) depth"),
    ],
)
def test_model_arguments_are_checked_the_same_way_on_upload_and_in_a_job(edge_api, tmp_path, args, message):
    import json

    client, h, store = edge_api
    r = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(args)},
        files={"file": ("m.safetensors", b"x" * 1000)},
        headers=h,
    )
    assert r.status_code == 422, r.text
    upload_detail = r.json()["detail"]
    assert upload_detail.startswith("args: model 'convnet' ")
    assert message in upload_detail
    assert _stored_files(tmp_path) == []
    assert store.list_models(1) == []
    r = client.post("/v1/jobs", json={**MINIMAL, "model": {"zoo": "convnet", "args": args}}, headers=h)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert upload_detail.removeprefix("args: ") in r.json()["detail"]


def test_an_unknown_zoo_name_is_refused_before_the_file_is_read(edge_api, tmp_path):
    client, h, _ = edge_api
    r = client.post("/v1/models", data={"zoo": "nope"}, files={"file": ("m.pt", b"x")}, headers=h)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("zoo: unknown model 'nope'")
    assert _stored_files(tmp_path) == []


def test_arguments_added_to_an_uploaded_model_are_checked(edge_api):
    from safetensors.torch import save as st_save

    from pruning.models import build_model

    client, h, _ = edge_api
    args = {"num_classes": 10, "in_channels": 1, "input_size": 16, "width": 0.25}
    weights = st_save({k: v.contiguous() for k, v in build_model("convnet", **args).state_dict().items()})
    import json

    r = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(args)},
        files={"file": ("m.safetensors", weights)},
        headers=h,
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    r = client.post("/v1/jobs", json={**MINIMAL, "model": {"upload": model_id, "args": {"width": 1e6}}}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("model.args: model 'convnet' argument width")


def test_build_model_refuses_bad_arguments_before_building():
    from pruning.errors import PruningError
    from pruning.models import build_model

    with pytest.raises(PruningError, match="argument width"):
        build_model("vgg16_bn", width=1e6)
    with pytest.raises(PruningError, match="takes no argument"):
        build_model("resnet20", depth=3)
    assert build_model("resnet20", input_size=16, width=0.25) is not None  # input_size: accepted by all


def test_no_model_within_its_declared_bounds_exceeds_max_params():
    """Each zoo model built at the largest arguments its schema allows (on the meta device: no
    memory) stays under MAX_PARAMS, so the bounds alone keep uploads and jobs from huge builds."""
    import inspect

    import torch

    from pruning.models import MODELS, list_models
    from pruning.models.zoo import MAX_PARAMS, model_args_schema

    for name in list_models():
        largest = {}
        for key, field in model_args_schema(name).model_fields.items():
            bounds = [m for m in field.metadata if hasattr(m, "le")]
            if not bounds:  # input_size of a model that ignores it
                continue
            largest[key] = bounds[0].le
        assert {"num_classes", "in_channels", "width"} <= set(largest), (name, largest)
        factory = MODELS.get(name)
        with torch.device("meta"):
            net = factory(**{k: v for k, v in largest.items() if k in inspect.signature(factory).parameters})
        n = sum(p.numel() for p in net.parameters())
        assert 0 < n <= MAX_PARAMS, (name, largest, n)
