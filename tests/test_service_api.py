"""The REST API in process (FastAPI TestClient, real SQLite store, scheduler off): auth,
two-team isolation on every endpoint, the minimal job body and its defaults, bad input
answered 4xx with a message and nothing written, listing, cancel, metrics."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as st_save

from pruning.models import build_model
from service.api import create_app
from service.config import Settings

MINIMAL = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
}
CONVNET_ARGS = {"num_classes": 10, "in_channels": 1, "input_size": 16}


@pytest.fixture
def api(tmp_path):
    """A client on a fresh app plus two teams' auth headers."""
    settings = Settings(
        data_dir=tmp_path / "data",
        scheduler=False,
        max_upload_bytes=2_000_000,
        allowed_data_roots=[tmp_path / "datasets"],
        trace_wait_seconds=60,  # these tests read the submit's own verdicts: it waits for every trace
    )
    (tmp_path / "datasets").mkdir()
    app = create_app(settings)
    with TestClient(app) as client:
        store = app.state.store
        a = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        b = {"Authorization": f"Bearer {store.create_token('beta')}"}
        yield client, a, b, store, settings


def _weights(zoo: str = "convnet", **args) -> bytes:
    model = build_model(zoo, **(args or CONVNET_ARGS))
    return st_save({k: v.contiguous() for k, v in model.state_dict().items()})


def _counts(store, settings) -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from service.store.tables import Job, Model

    with store.read() as s:
        jobs = s.scalar(select(func.count()).select_from(Job))
        models = s.scalar(select(func.count()).select_from(Model))
    uploads = sum(1 for p in (settings.data_dir / "uploads").rglob("*") if p.is_file())
    return jobs, models, uploads


def test_minimal_body_is_accepted_with_documented_defaults(api):
    client, a, _, store, _ = api
    r = client.post("/v1/jobs", json=MINIMAL, headers=a)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert isinstance(job["id"], int)
    spec = job["spec"]
    assert spec["criterion"] == "l1"
    assert spec["seed"] == 0
    assert spec["priority"] == 0
    assert spec["train"]["epochs"] is None  # until validation stops improving
    assert spec["train"]["max_epochs"] > 0
    assert spec["finetune"]["max_steps"] > 0
    assert spec["finetune"]["epochs"] is None
    config = store.get_job(job["id"]).config
    assert config["model"] == {
        "zoo": "convnet",
        "weights": None,
        "args": {},
        "upload": None,
        "program": None,
        "factory": None,
    }
    assert config["target"] == {"kind": "flops", "value": 0.5, "absolute": False}
    from workers.config import JobConfig

    assert JobConfig.model_validate(config).strategy.name == "uniform"


def test_no_token_or_wrong_token_is_401(api):
    client, _, _, _, _ = api
    for method, path in [
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/1"),
        ("get", "/v1/models"),
        ("get", "/v1/jobs/1/artifacts"),
        ("post", "/v1/jobs/1/cancel"),
    ]:
        assert getattr(client, method)(path).status_code == 401
        r = getattr(client, method)(path, headers={"Authorization": "Bearer sct_nope"})
        assert r.status_code == 401
        assert "token" in r.json()["detail"]


def test_revoked_token_is_refused(api):
    client, _, _, store, _ = api
    token = store.create_token("gamma")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    store.revoke_token(token)
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_two_teams_are_isolated_on_every_endpoint(api):
    client, a, b, store, _ = api
    job_id = client.post("/v1/jobs", json=MINIMAL, headers=a).json()["id"]
    model_id = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)},
        files={"file": ("m.safetensors", _weights())},
        headers=a,
    ).json()["id"]
    for path in [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/candidates",
        f"/v1/jobs/{job_id}/events",
        f"/v1/jobs/{job_id}/artifacts",
        f"/v1/jobs/{job_id}/artifacts/model.safetensors",
        f"/v1/models/{model_id}",
    ]:
        assert client.get(path, headers=a).status_code in (200, 404)
        r = client.get(path, headers=b)
        assert r.status_code == 404, path
        assert "not found" in r.json()["detail"], path
    assert client.get(f"/v1/jobs/{job_id}", headers=a).status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=b).status_code == 404
    assert store.get_job(job_id).status == "queued"
    assert client.get("/v1/jobs", headers=b).json()["total"] == 0
    assert client.get("/v1/models", headers=b).json() == []
    spec = {**MINIMAL, "model": {"upload": model_id}}
    r = client.post("/v1/jobs", json=spec, headers=b)
    assert r.status_code == 422
    assert "not found" in r.json()["detail"]
    assert client.post("/v1/jobs", json=spec, headers=a).status_code == 201


@pytest.mark.parametrize(
    "body, field",
    [
        ("{not json", "malformed JSON"),
        ({**MINIMAL, "strategy": {"name": "nope"}}, "unknown strategy"),
        ({**MINIMAL, "strategy": {"name": "eagleeye", "options": {"n_sample": 5}}}, "takes no option(s) n_sample"),
        ({**MINIMAL, "target": {"flops": -0.5}}, "target"),
        ({**MINIMAL, "target": {"flops": 1.5}}, "ratio must be in (0, 1]"),
        ({**MINIMAL, "target": {"flops": 0.5, "params": 0.5}}, "exactly one"),
        ({**MINIMAL, "target": {"flops": 0.0001}}, "infeasible"),
        ({**MINIMAL, "model": {"zoo": "alexnet"}}, "unknown zoo model"),
        ({**MINIMAL, "criterion": "magic"}, "unknown criterion"),
        ({**MINIMAL, "evaluator": {"name": "oracle"}}, "unknown evaluator"),
        ({**MINIMAL, "evaluator": {"name": "finetune", "options": {"stepz": 3}}}, "takes no option(s) stepz"),
        ({**MINIMAL, "space": {"max_rate": 1.5}}, "space.max_rate"),
        ({**MINIMAL, "space": {"streams": "sometimes"}}, "space.streams"),
        (
            {**MINIMAL, "model": {"zoo": "resnet20"}, "target": {"flops": 0.08}, "space": {"streams": "whole"}},
            "residual streams kept whole",
        ),
        ({**MINIMAL, "data": {"name": "imagefolder", "path": "/etc"}}, "outside the allowed data roots"),
        ({**MINIMAL, "data": {"name": "cifar10"}}, "needs a path"),
        ({**MINIMAL, "model": {"upload": 999}}, "not found"),
        ({**MINIMAL, "strategy": {"name": "optuna", "options": {"storage": "sqlite:////tmp/x.db"}}}, "not accepted"),
        (
            {**MINIMAL, "strategy": {"name": "autoslim", "options": {"supernet": "/etc"}}},
            "outside the allowed data roots",
        ),
        ({**MINIMAL, "bogus": 1}, "bogus"),
        ({k: v for k, v in MINIMAL.items() if k != "target"}, "target"),
    ],
)
def test_bad_job_specs_are_422_with_a_message_and_write_nothing(api, body, field):
    client, a, _, store, settings = api
    before = _counts(store, settings)
    kw = (
        {"content": body, "headers": {**a, "Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body, "headers": a}
    )
    r = client.post("/v1/jobs", **kw)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert _counts(store, settings) == before


def test_missing_data_path_under_allowed_root_is_422(api, tmp_path):
    client, a, _, store, settings = api
    spec = {**MINIMAL, "data": {"name": "imagefolder", "path": str(tmp_path / "datasets" / "missing")}}
    r = client.post("/v1/jobs", json=spec, headers=a)
    assert r.status_code == 422
    assert "does not exist" in r.json()["detail"]
    assert _counts(store, settings)[0] == 0


def test_upload_checks_size_format_and_fit_and_stores_sha256(api):
    import hashlib

    client, a, _, store, settings = api
    good = _weights()
    cases = [
        (("m.safetensors", b"\0" * 2_500_000), {"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)}, 413, "limit"),
        (("m.pkl", good), {"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)}, 422, "must be"),
        (
            ("m.safetensors", good),
            {"zoo": "convnet", "args": json.dumps({**CONVNET_ARGS, "num_classes": 3})},
            422,
            "do not fit",
        ),
        (("m.safetensors", b"garbage"), {"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)}, 422, "cannot read"),
        (("m.safetensors", good), {"zoo": "nope", "args": "{}"}, 422, "unknown model"),
        (("m.safetensors", good), {"zoo": "convnet", "args": "{bad"}, 422, "args"),
    ]
    for file, form, code, words in cases:
        r = client.post("/v1/models", data=form, files={"file": file}, headers=a)
        assert r.status_code == code, (file[0], r.text)
        assert words in r.json()["detail"], (file[0], r.text)
    r = client.post("/v1/models", data={"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)}, headers=a)
    assert r.status_code == 422
    assert "file" in r.json()["detail"]
    assert _counts(store, settings) == (0, 0, 0)
    pickled = io.BytesIO()
    torch.save({"evil": object()}, pickled)
    r = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)},
        files={"file": ("m.pt", pickled.getvalue())},
        headers=a,
    )
    assert r.status_code == 422
    weights_only = io.BytesIO()
    torch.save(build_model("convnet", **CONVNET_ARGS).state_dict(), weights_only)
    for name, blob in [("m.safetensors", good), ("m.pt", weights_only.getvalue())]:
        r = client.post(
            "/v1/models",
            data={"zoo": "convnet", "args": json.dumps(CONVNET_ARGS)},
            files={"file": (name, blob)},
            headers=a,
        )
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == hashlib.sha256(blob).hexdigest()
        assert r.json()["size"] == len(blob)
    assert _counts(store, settings)[1:] == (2, 2)


def test_list_filter_paginate_cancel_and_metrics(api):
    client, a, _, _, _ = api
    ids = [client.post("/v1/jobs", json={**MINIMAL, "priority": -i}, headers=a).json()["id"] for i in range(5)]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 1}, headers=a).json()
    assert page["total"] == 5
    assert [j["id"] for j in page["items"]] == ids[::-1][1:3]
    assert client.post(f"/v1/jobs/{ids[0]}/cancel", headers=a).json()["status"] == "cancelled"
    assert [j["id"] for j in client.get("/v1/jobs", params={"status": "cancelled"}, headers=a).json()["items"]] == [
        ids[0]
    ]
    assert client.get("/v1/jobs", params={"status": "weird"}, headers=a).status_code == 422
    events = client.get(f"/v1/jobs/{ids[0]}/events", headers=a).json()
    assert [e["kind"] for e in events] == ["queued", "cancelled"]
    assert [e["id"] for e in events] == [1, 2]
    assert client.get(f"/v1/jobs/{ids[0]}/events", params={"after": 1}, headers=a).json()[0]["kind"] == "cancelled"
    metrics = client.get("/metrics").text
    assert 'secateurs_jobs{status="queued"} 4.0' in metrics
    assert 'secateurs_jobs{status="cancelled"} 1.0' in metrics
    assert "secateurs_candidates_evaluated_total 0.0" in metrics
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}/candidates", "/v1/jobs/{job_id}/artifacts", "/v1/models"} <= set(paths)
    assert client.get("/v1/strategies", headers=a).json()[0]["name"] == "uniform"
