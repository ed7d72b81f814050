"""The service at its edges (issue 13), on SQLite and PostgreSQL: ids and query values beyond
what the columns hold, model arguments, strategy and evaluator options, the upload size limit
without Content-Length, rejected weight files, and an OpenAPI document that tells the truth."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_service_support import SMALL_CONVNET

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
    from test_service_support import upload_small_convnet

    client, h, _ = edge_api
    r = upload_small_convnet(client, h)
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


BAD_OPTIONS = [
    ({"n_samples": "x"}, "option n_samples: Input should be a valid integer"),
    ({"n_samples": -5}, "option n_samples: Input should be greater than or equal to 1"),
    ({"n_samples": 0}, "option n_samples: Input should be greater than or equal to 1"),
    ({"n_samples": 1.5}, "option n_samples: Input should be a valid integer, got a number with a fractional part"),
    ({"top_k": "x"}, "option top_k: Input should be a valid integer"),
    ({"finetune_lr": 1e30}, "option finetune_lr: Input should be less than or equal to 10"),
    ({"seed": 1e30}, "takes no option(s) seed"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_bad_strategy_options_are_a_422_at_submit_naming_the_option(edge_api, options, message):
    client, h, store = edge_api
    r = client.post("/v1/jobs", json={**MINIMAL, "strategy": {"name": "eagleeye", "options": options}}, headers=h)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert r.json()["detail"].startswith("strategy: strategy 'eagleeye' ")
    assert store.list_jobs(1)[1] == 0


@pytest.mark.parametrize(
    "evaluator, message",
    [
        ({"name": "finetune", "options": {"steps": -1}}, "evaluator 'finetune' option steps"),
        ({"name": "finetune", "options": {"lr": "fast"}}, "evaluator 'finetune' option lr"),
        ({"options": {"n_points": 0}}, "evaluator 'reconstruct' option n_points"),  # amc's default evaluator
    ],
)
def test_bad_evaluator_options_are_a_422_at_submit(edge_api, evaluator, message):
    client, h, _ = edge_api
    body = {**MINIMAL, "strategy": {"name": "amc"}, "evaluator": evaluator}
    r = client.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


def test_accepted_options_are_stored_as_the_strategy_reads_them(edge_api):
    client, h, _ = edge_api
    options = {"n_samples": "7", "finetune_lr": 1, "top_k": 2}
    r = client.post("/v1/jobs", json={**MINIMAL, "strategy": {"name": "eagleeye", "options": options}}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["strategy"]["options"] == {"n_samples": 7, "finetune_lr": 1.0, "top_k": 2}


def test_the_cli_refuses_the_same_options_with_exit_2_and_the_same_message(tmp_path, capsys):
    from secateurs import main

    argv = ["search", "--model", "convnet", "--data", "digits", "--target", "flops=0.5", "--strategy", "eagleeye"]
    code = main([*argv, "--option", "n_samples=1.5", "--out", str(tmp_path / "x")])
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "secateurs: error: strategy: strategy 'eagleeye' option n_samples: "
        "Input should be a valid integer, got a number with a fractional part"
    )
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_strategies_and_evaluators_publish_their_option_schemas(edge_api):
    from search.evaluators import list_evaluators
    from search.registry import list_strategies

    client, h, _ = edge_api
    strategies = {s["name"]: s for s in client.get("/v1/strategies", headers=h).json()}
    assert list(strategies) == list_strategies()
    eagle = strategies["eagleeye"]
    assert eagle["default_evaluator"] == "adaptive-bn"
    n_samples = eagle["options"]["properties"]["n_samples"]
    assert (n_samples["type"], n_samples["minimum"], n_samples["default"]) == ("integer", 1, 50)
    assert eagle["options"]["additionalProperties"] is False
    assert strategies["optuna"]["options"]["properties"]["sampler"]["enum"][0] == "tpe"
    evaluators = {e["name"]: e for e in client.get("/v1/evaluators", headers=h).json()}
    assert sorted(evaluators) == list_evaluators()
    assert evaluators["finetune"]["options"]["properties"]["steps"]["minimum"] == 0


def test_every_declared_default_meets_its_own_schema():
    """The constructor defaults are inside the bounds their annotations declare."""
    from pruning.registry import check_values
    from search.evaluators import evaluator_options, list_evaluators
    from search.registry import list_strategies, strategy_options

    schemas = [strategy_options(n) for n in list_strategies()] + [evaluator_options(n) for n in list_evaluators()]
    for schema in schemas:
        for key, field in schema.model_fields.items():
            if field.default is not None:
                check_values(schema, {key: field.default}, schema.__name__, "option")


def test_make_strategy_checks_options_like_a_job_spec():
    from pruning.models import build_model
    from search.base import SearchError
    from search.registry import make_strategy
    from search.space import SearchSpace

    space = SearchSpace(build_model("convnet", in_channels=1, input_size=16), (1, 16, 16), "flops=0.5")
    with pytest.raises(SearchError, match="option n_samples: Input should be greater than or equal to 1"):
        make_strategy("eagleeye", space, n_samples=0)
    assert make_strategy("eagleeye", space, n_samples="3").n_samples == 3


def _raw_upload(
    app, token: str, chunks, headers: list[tuple[bytes, bytes]] = (), path: str = "/v1/models"
) -> tuple[int, dict, int]:
    """POST /v1/models straight into the ASGI app, the body fed chunk by chunk without
    Content-Length (as a chunked upload arrives): (status, JSON body, chunks the app pulled)."""
    import asyncio
    import json

    pulled, sent = 0, []
    it = iter(chunks)

    async def receive():
        nonlocal pulled
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"multipart/form-data; boundary=BOUNDARY"),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert (b"connection", b"close") in start["headers"] or start["status"] != 413  # a 413 ends the connection
    return start["status"], json.loads(body), pulled


def _long_multipart():
    """A multipart body whose file part goes on (64 KiB chunks, 12.8 MB: the limit is 100 kB)."""
    yield (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="zoo"\r\n\r\nconvnet\r\n'
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="m.safetensors"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    for _ in range(200):
        yield b"\0" * (64 << 10)


def test_a_chunked_upload_is_cut_off_at_the_limit_as_it_arrives(tmp_path):
    from service.api.limits import FORM_SLACK

    settings = Settings(data_dir=tmp_path / "data", scheduler=False, max_upload_bytes=100_000)
    app = create_app(settings)
    with TestClient(app) as client:
        token = client.app.state.store.create_token("alpha")
    status, body, pulled = _raw_upload(app, token, _long_multipart())
    assert status == 413
    assert body == {"detail": "file: larger than the 100,000 byte limit"}
    # the body stopped being read at the limit: (100,000 + slack) / 64 KiB chunks, plus the headers' chunk
    assert pulled <= 2 + (100_000 + FORM_SLACK) // (64 << 10)
    assert not any(p.is_file() for p in (tmp_path / "data" / "uploads").rglob("*"))


def test_a_chunked_data_set_upload_is_cut_off_at_its_limit_too(tmp_path):
    from service.api.limits import FORM_SLACK

    settings = Settings(data_dir=tmp_path / "data", scheduler=False, max_dataset_upload_bytes=200_000)
    app = create_app(settings)
    with TestClient(app) as client:
        token = client.app.state.store.create_token("alpha")
    status, body, pulled = _raw_upload(app, token, _long_multipart(), path="/v1/datasets")
    assert status == 413
    assert body == {"detail": "file: larger than the 200,000 byte limit"}
    assert pulled <= 2 + (200_000 + FORM_SLACK) // (64 << 10)


def test_a_declared_length_over_the_limit_is_refused_unread(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", scheduler=False, max_upload_bytes=100_000)
    app = create_app(settings)
    with TestClient(app) as client:
        token = client.app.state.store.create_token("alpha")
    status, body, pulled = _raw_upload(app, token, _long_multipart(), [(b"content-length", b"3000000000")])
    assert status == 413
    assert body["detail"] == "file: larger than the 100,000 byte limit"
    assert pulled == 0


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _pt_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rejected_files():
    from safetensors.torch import save as st_save

    from pruning.models import build_model

    five = build_model("convnet", num_classes=5, in_channels=1, input_size=16, width=0.25).state_dict()
    return [
        ("m.pt", b"garbage" * 50, "file: cannot read weights from the uploaded file: not a PyTorch state dict file"),
        (
            "m.pt",
            _pt_bytes({"x": _Evil()}),
            "file: cannot read weights from the uploaded file: it holds Python objects",
        ),
        ("m.safetensors", b"garbage" * 50, "file: cannot read weights from the uploaded file: not a valid safetensors"),
        (
            "m.safetensors",
            st_save({k: v.contiguous() for k, v in five.items()}),
            "file: weights in the uploaded file do not fit the model: shape of fc2.weight is (5, 32)",
        ),
    ]


@pytest.mark.parametrize("index", range(4))
def test_rejected_weight_files_answer_one_line_in_our_words(edge_api, index):
    import json

    client, h, _ = edge_api
    name, content, start = _rejected_files()[index]
    r = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps(SMALL_CONVNET)},
        files={"file": (name, content)},
        headers=h,
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(start), detail
    assert "\n" not in detail
    assert "\x1b" not in detail
    assert "Weights only load failed" not in detail
    assert "Error(s) in loading state_dict" not in detail


def _openapi(tmp_path) -> dict:
    return create_app(Settings(data_dir=tmp_path / "data", scheduler=False)).openapi()


def test_the_openapi_document_declares_every_error_body_as_it_is_sent(tmp_path, edge_api):
    from service.api.errors import ErrorOut

    doc = _openapi(tmp_path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert "401" in op["responses"] or not path.startswith("/v1/"), where
            for code, response in op["responses"].items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (where, code)
            if "{job_id}" in path or "{model_id}" in path:
                assert "404" in op["responses"], where
    upload = doc["paths"]["/v1/models"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(upload)
    # and the bodies really are ErrorOut: a validation 422, a handler's 422, a 401, a 404
    client, h, _ = edge_api
    for r in (
        client.get("/v1/jobs?limit=0", headers=h),
        client.post("/v1/jobs", json={**MINIMAL, "model": {"upload": 7}}, headers=h),
        client.get("/v1/jobs"),
        client.get("/v1/jobs/7", headers=h),
    ):
        assert r.status_code in (401, 404, 422)
        ErrorOut.model_validate(r.json(), strict=True)
    assert isinstance(client.get("/v1/jobs?limit=0", headers=h).json()["errors"], list)


def test_job_status_is_an_enum_in_the_document(tmp_path):
    from service.store import JobStatus

    doc = _openapi(tmp_path)
    schemas = doc["components"]["schemas"]
    assert schemas["JobStatus"]["enum"] == [s.value for s in JobStatus]
    assert schemas["JobOut"]["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
    status_param = next(p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "status")
    assert {"$ref": "#/components/schemas/JobStatus"} in status_param["schema"]["anyOf"]
