"""A hostile or careless user at the door: names too long for the file system, NUL bytes,
archives whose every member is skipped, non-finite numbers, data folders that hold nothing,
oversized bodies. Each answer is a one-line 4xx and nothing is stored."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from test_service_edges import MINIMAL

from service.api import create_app
from service.config import Settings


@pytest.fixture
def api(tmp_path):
    """A scheduler-less app on SQLite with an allowed data root; a client (server errors
    answered as 500, not raised), one team's header, the settings and the store."""
    root = tmp_path / "datasets"
    root.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        scheduler=False,
        allowed_data_roots=[root],
        max_dataset_upload_bytes=2_000_000,
        max_dataset_bytes=1_000_000,
        max_dataset_files=200,
        max_image_pixels=100_000,
        trace_wait_seconds=60,  # these tests read the submit's own verdicts: it waits for every trace
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        store = app.state.store
        yield client, {"Authorization": f"Bearer {store.create_token('alpha')}"}, settings, store


def one_line_4xx(r, status: int, words: str = "") -> str:
    """The answer's one-line detail, after checking its status, and that it names `words`."""
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str), detail
    assert "\n" not in detail, detail
    assert "Traceback" not in detail, detail
    assert words in detail, detail
    return detail


def _jobs(store) -> int:
    return store.list_jobs(1)[1]


# --- names too long for the file system, NUL bytes ---


@pytest.mark.parametrize("length", [255, 256, 4000])
def test_a_data_path_too_long_for_the_file_system_is_a_422(api, tmp_path, length):
    client, h, _, store = api
    path = str(tmp_path / "datasets" / ("x" * length))
    spec = {**MINIMAL, "data": {"name": "imagefolder", "path": path}}
    one_line_4xx(client.post("/v1/jobs", json=spec, headers=h), 422, "data.path")
    spec = {**MINIMAL, "data": {"name": "cifar10", "path": path + "/" + "y" * length}}
    one_line_4xx(client.post("/v1/jobs", json=spec, headers=h), 422, "data.path")
    assert _jobs(store) == 0


@pytest.mark.parametrize("length", [256, 5000])
def test_a_supernet_path_too_long_for_the_file_system_is_a_422(api, tmp_path, length):
    client, h, _, store = api
    spec = {
        **MINIMAL,
        "strategy": {"name": "autoslim", "options": {"supernet": str(tmp_path / "datasets" / ("s" * length))}},
    }
    one_line_4xx(client.post("/v1/jobs", json=spec, headers=h), 422, "strategy.options.supernet")
    assert _jobs(store) == 0


def test_a_data_path_with_a_nul_byte_is_a_422(api, tmp_path):
    client, h, _, store = api
    spec = {**MINIMAL, "data": {"name": "imagefolder", "path": str(tmp_path / "datasets" / "a\x00b")}}
    one_line_4xx(client.post("/v1/jobs", json=spec, headers=h), 422, "data.path")
    assert _jobs(store) == 0


@pytest.mark.parametrize("path", ["/static/%00", "/static/a%00b.js", "/static/" + "x" * 300, "/static/a/" * 2000])
def test_static_paths_the_file_system_refuses_are_a_404(api, path):
    client, _, _, _ = api
    r = client.get(path)
    one_line_4xx(r, 404, "not found")


# --- archives whose every member is skipped ---


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SKIPPED = {
    "nothing": {},
    "hidden and __MACOSX": {".cache/a.png": _png(), "__MACOSX/b.png": _png()},
    "dot-dot class folders": {f"..a{c}/{i}.png": _png() for c in "ab" for i in range(3)},
}


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tgz"])
@pytest.mark.parametrize("members", list(SKIPPED), ids=list(SKIPPED))
def test_an_archive_whose_every_member_is_skipped_is_a_422(api, kind, members):
    client, h, settings, store = api
    content = SKIPPED[members]
    body = _zip(content) if kind == "zip" else _tar(content, "w" if kind == "tar" else "w:gz")
    r = client.post("/v1/datasets", files={"file": (f"d.{kind}", body)}, headers=h)
    one_line_4xx(r, 422, "no class folders")
    assert store.list_datasets(1) == []
    assert [p for p in (settings.data_dir / "datasets").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "name, body",
    [
        ("zeros.tar", b"\0" * 10240),  # an empty tar: only its end-of-archive blocks
        ("empty.tar.gz", gzip.compress(b"")),  # a gzip of nothing
        ("zeros.tar.gz", gzip.compress(b"\0" * 10240)),
        ("empty.zip", b"PK\x05\x06" + b"\0" * 18),  # only the end-of-central-directory record
    ],
    ids=["tar", "gzip-of-nothing", "tar.gz", "zip"],
)
def test_every_archive_readers_empty_case_is_a_422(api, name, body):
    client, h, _, store = api
    one_line_4xx(client.post("/v1/datasets", files={"file": (name, body)}, headers=h), 422)
    assert store.list_datasets(1) == []


def test_an_archive_member_name_too_long_for_the_file_system_is_a_422(api):
    client, h, _, store = api
    body = _zip({f"a/{'x' * 300}.png": _png(), "b/0.png": _png()})
    one_line_4xx(client.post("/v1/datasets", files={"file": ("long.zip", body)}, headers=h), 422)
    assert store.list_datasets(1) == []


@pytest.fixture
def both(db_url, tmp_path):
    """A scheduler-less app on each backend (SQLite, PostgreSQL): client, a team's header, store."""
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, scheduler=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        store = app.state.store
        yield client, {"Authorization": f"Bearer {store.create_token('alpha')}"}, store


@pytest.mark.parametrize("name", ["x" * 300 + ".safetensors", "a\x00b.safetensors", "a\tb.safetensors"])
def test_an_upload_file_name_the_store_cannot_hold_is_a_422(both, name):
    client, h, store = both
    r = client.post("/v1/models", data={"zoo": "convnet"}, files={"file": (name, b"x" * 100)}, headers=h)
    assert r.status_code in (400, 422), r.text
    one_line_4xx(r, r.status_code)
    r = client.post("/v1/datasets", files={"file": (name.replace(".safetensors", ".zip"), _zip({}))}, headers=h)
    assert r.status_code in (400, 422), r.text
    one_line_4xx(r, r.status_code)
    assert store.list_models(1) == []
    assert store.list_datasets(1) == []


# --- non-finite numbers ---

NON_FINITE = [
    ('"target": "params=1e999"', "target"),
    ('"target": {"kind": "params", "value": Infinity, "absolute": true}', "target"),
    ('"target": {"kind": "flops", "value": NaN, "absolute": false}', "target"),
    ('"target": {"flops": 1e999}', "target"),
    ('"target": "memory=1e306gb"', "target"),
    ('"finetune": {"lr": Infinity}', "finetune.lr"),
    ('"finetune": {"kd_alpha": NaN}', "finetune.kd_alpha"),
    ('"finetune": {"lr": "inf"}', "finetune.lr"),
    ('"train": {"epochs": -Infinity}', "train.epochs"),
    ('"space": {"pinned": {"conv1": NaN}}', "space.pinned"),
    ('"space": {"max_rate": "nan"}', "space.max_rate"),
    ('"model": {"zoo": "convnet", "args": {"width": 1e999}}', "model.args"),
    ('"strategy": {"name": "eagleeye", "options": {"min_rate": {"x": [1, NaN]}}}', "strategy"),
    ('"strategy": {"name": "uniform", "options": {"rate": Infinity}}', "strategy"),
    ('"evaluator": {"name": "adaptive-bn", "options": {"x": -Infinity}}', "evaluator"),
    ('"search": {"selection_lr": 1e999}', "search.selection_lr"),
]


@pytest.mark.parametrize("field, where", NON_FINITE, ids=[w for _, w in NON_FINITE])
def test_a_non_finite_number_anywhere_in_a_spec_is_refused_at_the_door(api, field, where):
    client, h, _, store = api
    base = {k: v for k, v in MINIMAL.items() if f'"{k}"' not in field.split(":")[0]}
    body = json.dumps(base)[:-1] + ", " + field + "}"
    r = client.post("/v1/jobs", content=body, headers={**h, "Content-Type": "application/json"})
    detail = one_line_4xx(r, 422, where)
    assert "finite" in detail or "ratio" in detail, detail
    assert _jobs(store) == 0


def test_the_job_config_refuses_non_finite_numbers_on_the_cli_path_too():
    from workers.config import JobConfig

    for bad in (float("inf"), float("nan"), "inf"):
        with pytest.raises(ValueError, match="finite"):
            JobConfig.model_validate({**MINIMAL, "finetune": {"lr": bad}})
    with pytest.raises(ValueError, match="finite"):
        JobConfig.model_validate({**MINIMAL, "target": "params=1e999"})


# --- data folders that hold nothing a reader can use ---


def _folder(root, name: str, files: dict[str, bytes]):
    folder = root / name
    folder.mkdir()
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return str(folder)


@pytest.mark.parametrize(
    "data, files, words",
    [
        ("cifar10", {}, "no CIFAR-10 batches"),
        ("cifar10", {"cifar-10-batches-py/data_batch_1": b"x"}, "lacks data_batch_2"),
        ("fashion-mnist", {}, "train-images-idx3-ubyte not found"),
        ("imagefolder", {"a/readme.txt": b"x", "b/x.txt": b"x"}, "no images"),
        ("imagefolder", {"a/0.png": _png(), "b/notes.txt": b"x"}, "class folder(s) b hold no images"),
        ("imagefolder", {"train/a/0.png": _png(), "train/b/.0.png": _png()}, "class folder(s) b hold no images"),
        ("imagefolder", {"a/0.png": _png()}, "needs one sub-folder per class"),
    ],
    ids=[
        "cifar10-empty",
        "cifar10-partial",
        "fashion-empty",
        "no-images",
        "flat-class-empty",
        "split-class-empty",
        "one",
    ],
)
def test_a_data_folder_without_what_its_reader_needs_is_refused_at_submit(api, tmp_path, data, files, words):
    client, h, _, store = api
    path = _folder(tmp_path / "datasets", "d", files)
    r = client.post("/v1/jobs", json={**MINIMAL, "data": {"name": data, "path": path}}, headers=h)
    detail = one_line_4xx(r, 422, words)
    assert detail.startswith("data.path: "), detail
    assert "num_classes" not in detail
    assert _jobs(store) == 0


# --- smaller: OPTIONS, one status for a pixel limit, only images kept, tracebacks ---


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models", "/v1/datasets"])
def test_options_and_a_405_list_every_method_of_a_path(api, path):
    client, _, _, _ = api
    r = client.options(path)
    assert r.status_code == 204, r.text
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= allowed
    r = client.put(path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    assert client.options("/v1/jobs/1").headers["allow"].startswith("GET")
    assert client.options("/v1/nothing-here").status_code == 404


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (its pixels are missing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(400, 400), (100_000, 100_000)], ids=["over-the-limit", "decompression-bomb"])
def test_an_image_over_the_pixel_limit_is_413_whatever_pillow_thinks(api, size):
    client, h, _, store = api
    members = {f"{c}/{i}.png": _png() for c in "ab" for i in range(3)}
    if size == (400, 400):
        big = io.BytesIO()
        Image.new("L", size).save(big, "PNG")
        members["a/big.png"] = big.getvalue()
    else:
        members["a/big.png"] = _png_claiming(*size)
    r = client.post("/v1/datasets", files={"file": ("big.zip", _zip(members))}, headers=h)
    one_line_4xx(r, 413, "a/big.png is")
    assert "100,000 pixel limit" in r.json()["detail"]
    assert store.list_datasets(1) == []


def test_only_the_images_of_an_accepted_archive_are_stored(api):
    client, h, settings, _ = api
    members = {f"{c}/{i}.png": _png() for c in "ab" for i in range(3)}
    members |= {"README.txt": b"notes", "a/run.sh": b"#!/bin/sh\nrm -rf /\n", "b/sub/labels.csv": b"x"}
    r = client.post(
        "/v1/datasets", files={"file": ("d.zip", _zip({f"wrap/{k}": v for k, v in members.items()}))}, headers=h
    )
    assert r.status_code == 201, r.text
    stored = sorted(p.name for p in (settings.data_dir / "datasets").rglob("*") if p.is_file())
    assert stored == sorted(f"{i}.png" for _ in "ab" for i in range(3))


def test_a_failed_jobs_traceback_is_for_admin_tokens_only(api):
    client, h, _, store = api
    r = client.post("/v1/jobs", json=MINIMAL, headers=h)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    job, lease = store.claim_next()
    assert job.id == job_id
    trace = 'Traceback (most recent call last):\n  File "/srv/secateurs/workers/pipeline.py", line 1\nValueError: x'
    assert store.finish_job(job_id, lease, "failed", error="ValueError: x", traceback=trace)
    seen = client.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert seen["error"] == "ValueError: x"
    assert seen["traceback"] is None
    admin = {"Authorization": f"Bearer {store.create_token('alpha', admin=True)}"}
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).json()["traceback"] == trace
    listed = client.get("/v1/jobs", headers=h).json()["items"][0]
    assert "traceback" not in listed
    assert "/srv/" not in str(listed)


# --- bounded job specs ---


def test_a_job_spec_over_the_body_limit_is_413_unread(api):
    client, h, settings, store = api
    huge = {**MINIMAL, "model": {"zoo": "convnet", "args": {f"k{i}": i for i in range(200_000)}}}
    body = json.dumps(huge).encode()
    assert len(body) > settings.max_spec_bytes
    r = client.post("/v1/jobs", content=body, headers={**h, "Content-Type": "application/json"})
    one_line_4xx(r, 413, f"body: larger than the {settings.max_spec_bytes:,} byte limit")

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    r = client.post("/v1/jobs", content=chunks(), headers={**h, "Content-Type": "application/json"})
    one_line_4xx(r, 413, "body: larger than")
    assert _jobs(store) == 0


def test_a_422_on_a_large_spec_stays_small(api):
    client, h, settings, store = api
    keys = {f"unknown_argument_{i:06d}": i for i in range(30_000)}
    body = json.dumps({**MINIMAL, "model": {"zoo": "convnet", "args": keys}, "bogus": {str(i): i for i in range(50)}})
    assert len(body) < settings.max_spec_bytes
    r = client.post("/v1/jobs", content=body, headers={**h, "Content-Type": "application/json"})
    detail = one_line_4xx(r, 422, "model")
    assert len(r.content) < 4_000, len(r.content)
    assert "..." in detail
    many = json.dumps({**MINIMAL, **{f"extra{i}": i for i in range(5000)}})
    r = client.post("/v1/jobs", content=many, headers={**h, "Content-Type": "application/json"})
    detail = one_line_4xx(r, 422, "and 4980 more")
    assert len(r.json()["errors"]) == 20
    assert len(r.content) < 10_000, len(r.content)
    assert _jobs(store) == 0


def test_the_submit_body_is_still_declared_in_the_openapi_document(api):
    client, _, _, _ = api
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/jobs"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/JobConfig"}
    assert set(doc["components"]["schemas"]["JobConfig"]["required"]) == {"model", "data", "target", "strategy"}
    assert "413" in op["responses"]


# --- real networks: the upload limit ---


def test_the_default_upload_limit_takes_real_cnns_and_me_shows_every_limit(api):
    client, h, settings, _ = api
    assert Settings().max_upload_bytes >= 2 << 30  # torchvision's VGG-16 (1000 classes) as a .pt2 is 528 MB
    me = client.get("/v1/me", headers=h).json()
    assert me["team"] == "alpha"
    assert me["limits"] == {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_dataset_upload_bytes": 2_000_000,
        "max_dataset_bytes": 1_000_000,
        "max_dataset_files": 200,
        "max_image_pixels": 100_000,
        "max_spec_bytes": settings.max_spec_bytes,
    }
    doc = client.get("/openapi.json").json()
    assert "max_upload_bytes" in doc["components"]["schemas"]["Limits"]["properties"]


# --- submit never traces a network it has traced before ---


@pytest.fixture
def traces(tracer):
    """The input shapes of the traces a fresh trace process has made, once it has made them."""
    return lambda: [tuple(t["input_shape"]) for t in tracer.traced()]


def test_a_zoo_network_is_traced_once_and_gives_the_same_feasibility_answers(api, traces):
    client, h, _, store = api
    spec = {**MINIMAL, "model": {"zoo": "resnet20"}, "data": {"name": "synthetic", "input_size": 32}}
    assert client.post("/v1/jobs", json=spec, headers=h).status_code == 201
    assert client.post("/v1/jobs", json={**spec, "target": "params=0.6"}, headers=h).status_code == 201
    r = client.post("/v1/jobs", json={**spec, "target": {"flops": 0.0001}}, headers=h)
    one_line_4xx(r, 422, "target: target flops<=0.01% is infeasible")
    r = client.post("/v1/jobs", json={**spec, "target": {"flops": 0.08}, "space": {"streams": "whole"}}, headers=h)
    one_line_4xx(r, 422, "residual streams kept whole")
    assert traces() == [(3, 32, 32)]  # one trace for four submits
    spec16 = {**spec, "data": {"name": "synthetic", "input_size": 16}}
    assert client.post("/v1/jobs", json=spec16, headers=h).status_code == 201
    assert traces() == [(3, 32, 32), (3, 16, 16)]  # another input size is another network
    assert _jobs(store) == 3


def test_an_uploaded_program_is_traced_at_upload_and_not_at_submit(api, traces, tmp_path):
    from corpus import INPUT_SHAPE, build

    from pruning.export import export_program

    client, h, _, store = api
    path = export_program(build("resnet_basic"), tmp_path / "net.pt2", INPUT_SHAPE)
    r = client.post("/v1/models", files={"file": ("net.pt2", path.read_bytes())}, headers=h)
    assert r.status_code == 201, r.text
    assert traces() == [INPUT_SHAPE]
    spec = {**MINIMAL, "model": {"upload": r.json()["id"]}, "data": {"name": "synthetic", "input_size": 32}}
    assert client.post("/v1/jobs", json=spec, headers=h).status_code == 201
    r = client.post("/v1/jobs", json={**spec, "target": {"flops": 0.0001}}, headers=h)
    one_line_4xx(r, 422, "is infeasible")
    assert traces() == [INPUT_SHAPE]  # the submits reused the upload's trace
    assert _jobs(store) == 1


# --- torchvision's ShuffleNetV2: the shuffle's groups pinned, the rest searched ---


def test_a_torchvision_style_shufflenet_program_is_searched_with_its_shuffled_groups_pinned(api, corpus_exports):
    from corpus import INPUT_SHAPE, exported

    from pruning.intake import intake_program
    from search.space import SearchSpace

    path = exported("shufflenet_v2_tv", corpus_exports)  # a dynamic batch
    net = intake_program(path).module
    space = SearchSpace(net, INPUT_SHAPE, "flops=0.5")
    assert space.engine_pins
    assert all("shuffle" in why for why in space.engine_pins.values()), space.engine_pins
    assert space.keys  # the rest is searched
    cut = space.cut(dict.fromkeys(space.keys, 0.5)).eval()
    x = torch.randn(2, *INPUT_SHAPE)
    assert cut(x).shape == net(x).shape
    for key in space.engine_pins:
        assert space.kept(dict.fromkeys(space.keys, 0.5))[key] == space.by_key[key].channels
    client, h, _, _ = api
    r = client.post("/v1/models", files={"file": ("shufflenet.pt2", path.read_bytes())}, headers=h)
    assert r.status_code == 201, r.text
    spec = {**MINIMAL, "model": {"upload": r.json()["id"]}, "data": {"name": "synthetic", "input_size": 32}}
    r = client.post("/v1/jobs", json=spec, headers=h)
    assert r.status_code == 201, r.text
