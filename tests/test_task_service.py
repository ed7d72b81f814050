"""Tasks at the service's door: `task`, `task_output` and `task_options` checked at submit
(one-line 422s), a program with two outputs uploaded and described, and an image archive
without class folders kept for the tasks that read no labels."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch
from corpus.heads import AuxHeadNet
from fastapi.testclient import TestClient
from PIL import Image

from pruning.export import export_program
from service.api import create_app
from service.config import Settings

SYNTH = {"name": "synthetic", "input_size": 32}
JOB = {"target": {"flops": 0.5}, "strategy": {"name": "uniform"}}


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    return export_program(AuxHeadNet().eval(), tmp_path_factory.mktemp("aux") / "aux.pt2", (3, 32, 32)).read_bytes()


@pytest.fixture
def api(tmp_path, program):
    settings = Settings(data_dir=tmp_path / "data", scheduler=False)
    app = create_app(settings)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        r = client.post("/v1/models", headers=h, files={"file": ("aux.pt2", io.BytesIO(program))})
        assert r.status_code == 201, r.text
        yield client, h, r.json()


def _one_line_422(r, words: str) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert "\n" not in detail
    assert words in detail, detail


def test_a_program_with_two_outputs_is_described_by_name(api) -> None:
    _, _, model = api
    assert model["args"]["outputs"] == {"out": [10], "aux": [10]}
    assert model["args"]["output_shape"] == [10]


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"task_output": "main"}, "task_output 'main' is not an output of the network; it has: out, aux"),
        ({"task_output": 2}, "task_output 2 is out of range: the network has 2 output(s)"),
        ({"task_output": -1}, "task_output"),
        ({"task_output": {"a": 1}}, "task_output"),
        ({"task": "segmentation-of-cats"}, "task"),
        ({"task_options": {"temperature": 2}}, "task 'classification' takes no option(s) temperature"),
        ({"task": "distillation", "task_options": {"temperature": -1}}, "temperature"),
        ({"task": "distillation", "task_options": {"temperature": "hot"}}, "temperature"),
        ({"task": "distillation", "task_options": {"kinds": {"out": "pixels"}}}, "kinds"),
    ],
)
def test_bad_task_fields_are_one_line_422s(api, fields, words) -> None:
    client, h, model = api
    r = client.post("/v1/jobs", headers=h, json={**JOB, "data": SYNTH, "model": {"upload": model["id"]}, **fields})
    _one_line_422(r, words)


def test_good_task_fields_are_accepted(api) -> None:
    client, h, model = api
    for fields in (
        {"task_output": "aux"},
        {"task_output": 1},
        {"task": "distillation", "task_options": {"temperature": 2}},
    ):
        r = client.post("/v1/jobs", headers=h, json={**JOB, "data": SYNTH, "model": {"upload": model["id"]}, **fields})
        assert r.status_code == 201, r.text
        assert r.json()["spec"].get("task_output") == fields.get("task_output")


def test_zoo_jobs_have_one_output_and_distil_only_trained_networks(api) -> None:
    client, h, _ = api
    zoo = {**JOB, "model": {"zoo": "convnet"}, "data": {"name": "digits"}}
    _one_line_422(client.post("/v1/jobs", headers=h, json={**zoo, "task_output": "aux"}), "it has: output")
    _one_line_422(
        client.post("/v1/jobs", headers=h, json={**zoo, "task": "distillation"}),
        "the distillation task needs a trained",
    )


def _flat_archive(n: int = 12) -> bytes:
    """RGB 32x32 images in one folder: no class folders."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for i in range(n):
            img = io.BytesIO()
            Image.new("RGB", (32, 32), (i * 20, 100, 200 - i * 10)).save(img, "PNG")
            info = tarfile.TarInfo(f"shots/{i}.png")
            info.size = len(img.getvalue())
            t.addfile(info, io.BytesIO(img.getvalue()))
    return buf.getvalue()


def test_images_without_class_folders_are_kept_for_distillation_only(api) -> None:
    client, h, model = api
    r = client.post("/v1/datasets", headers=h, files={"file": ("shots.tar.gz", _flat_archive())})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["classes"], ds["num_classes"], ds["in_channels"]) == ([], 0, 3)
    job = {**JOB, "model": {"upload": model["id"]}, "data": {"upload": ds["id"]}}
    _one_line_422(client.post("/v1/jobs", headers=h, json=job), "needs one sub-folder per class")
    r = client.post("/v1/jobs", headers=h, json={**job, "task": "distillation"})
    assert r.status_code == 201, r.text
