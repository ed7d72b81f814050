"""A user's network through the service: a `.pt2` uploaded (converted and checked at upload,
refused with a one-line 422 when it cannot be), a job spec naming it (`model: {upload: ID}`;
data that does not fit its input or outputs refused at submit with both shapes), and, end to
end on a real server, a small job on digits whose pruned network comes back as `model.pt2`
(runs with torch alone), `model.onnx` and `model.safetensors`, reported under the user's
layer names."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from pruning.export import export_program
from service.api import create_app
from service.client import Client
from service.config import Settings
from service.devserver import ServerProcess

SHAPE = (1, 16, 16)
JOB = {"data": {"name": "digits"}, "target": {"flops": 0.6}, "strategy": {"name": "uniform"}}


def _demo_net() -> type[nn.Module]:
    """The demo's user network (scripts/demo_net.py, not a package: loaded from its file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_net", Path(__file__).parents[1] / "scripts" / "demo_net.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DigitsNet


DigitsNet = _demo_net()


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    root = tmp_path_factory.mktemp("programs")
    torch.manual_seed(0)
    ten = export_program(DigitsNet(10).eval(), root / "digits_net.pt2", SHAPE)
    seven = export_program(DigitsNet(7).eval(), root / "seven.pt2", SHAPE)
    static = root / "static.pt2"
    torch.export.save(torch.export.export(DigitsNet(10).eval(), (torch.randn(1, *SHAPE),)), static)
    return {"ten": ten, "seven": seven, "static": static}


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", scheduler=False, max_upload_bytes=2_000_000)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}


def _upload(client, headers, name: str, data: bytes, **form):
    return client.post("/v1/models", headers=headers, data=form, files={"file": (name, io.BytesIO(data))})


def test_a_program_upload_is_converted_and_described(api, programs) -> None:
    client, h = api
    r = _upload(client, h, "digits_net.pt2", programs["ten"].read_bytes())
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["kind"] == "program"
    assert m["zoo"] is None
    assert m["args"]["input_shape"] == [1, 16, 16]
    assert m["args"]["output_shape"] == [10]
    assert list(m["args"]["layers"]) == ["stem.0", "stem.1", "block.0", "block.1", "gate", "classifier"]
    assert client.get(f"/v1/models/{m['id']}", headers=h).json()["kind"] == "program"
    job = client.post("/v1/jobs", headers=h, json={**JOB, "model": {"upload": m["id"]}})
    assert job.status_code == 201, job.text


@pytest.mark.parametrize(
    "name, data, form, message",
    [
        ("junk.pt2", b"not a zip archive", {}, "not a torch.export program"),
        ("static.pt2", None, {}, "static batch of 1"),
        ("digits_net.pt2", None, {"zoo": "convnet"}, "give no zoo"),
        ("weights.safetensors", b"x", {}, "zoo: required"),
    ],
)
def test_uploads_the_engine_cannot_take_are_one_line_422s(api, programs, name, data, form, message) -> None:
    client, h = api
    body = data if data is not None else programs["static" if name == "static.pt2" else "ten"].read_bytes()
    r = _upload(client, h, name, body, **form)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert message in detail
    assert "\n" not in detail
    assert client.get("/v1/models", headers=h).json() == []


@pytest.mark.parametrize(
    "program, data, message",
    [
        (
            "ten",
            {"name": "synthetic"},
            "data set synthetic gives 3x16x16 images in 10 classes, but the model takes 1x16x16",
        ),
        (
            "seven",
            {"name": "digits"},
            "gives 1x16x16 images in 10 classes, but the model takes 1x16x16 inputs and gives 7",
        ),
        ("ten", {"name": "digits", "input_size": 24}, "gives 1x24x24 images"),
    ],
)
def test_data_that_does_not_fit_the_program_is_refused_at_submit(api, programs, program, data, message) -> None:
    client, h = api
    m = _upload(client, h, f"{program}.pt2", programs[program].read_bytes()).json()
    r = client.post("/v1/jobs", headers=h, json={**JOB, "data": data, "model": {"upload": m["id"]}})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


def test_server_paths_and_factories_are_refused_in_specs(api, programs) -> None:
    client, h = api
    for model, field in (
        ({"program": str(programs["ten"])}, "model.program"),
        ({"factory": "os:getcwd"}, "model.factory"),
    ):
        r = client.post("/v1/jobs", headers=h, json={**JOB, "model": model})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(field)


@pytest.mark.slow
def test_a_user_network_end_to_end_on_a_real_server(programs, tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data")
    try:
        srv.start()
        token = srv.cli("token", "create", "--team", "vision").stdout.strip().splitlines()[-1]
        client = Client(srv.url, token)
        up = srv.cli("upload", str(programs["ten"]), "--url", srv.url, "--token", token)
        assert up.returncode == 0, up.stderr
        model_id = int(up.stdout.strip().splitlines()[-1])
        job = client.submit(
            {
                **JOB,
                "model": {"upload": model_id},
                "search": {"max_candidates": 4},
                "finetune": {"max_steps": 20},
            }
        )
        done = client.wait(job["id"], poll=0.5, timeout=420)
        assert done["status"] == "succeeded", done
        out = tmp_path / "out"
        client.download(job["id"], out)
    finally:
        srv.stop()
    for name in ("model.pt2", "model.onnx", "model.safetensors", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["model"].endswith(".pt2")
    assert set(report["layer_channels"]) == {"stem.0", "block.0", "gate", "classifier"}
    assert report["layer_channels"]["stem.0"] == [16, 16]  # the stem is kept whole by default
    kept, original = report["layer_channels"]["block.0"]
    assert original == 32
    assert kept < 32
    assert report["flops_after"] <= 0.6 * report["flops_before"]
    assert list(report["kept_channels"]) == list(report["original_channels"])
    assert report["kept_channels"]["block.0"] == kept
    # the returned program runs with torch alone and matches the ONNX export
    x = torch.randn(3, *SHAPE)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        f"y = torch.export.load({str(out / 'model.pt2')!r}).module()(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('pruning', 'search', 'workers', 'service')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)
    y = torch.load(tmp_path / "y.pt")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    torch.testing.assert_close(torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]), y, atol=1e-4, rtol=0)
    assert y.shape == (3, 10)
