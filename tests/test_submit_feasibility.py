"""A submit never traces a network in the API process: the trace process (`service.tracer`)
traces it, and when the trace is not ready in `trace_wait_seconds` the job is accepted and
checks the same target itself before training (`workers.pipeline.prepare`). Either way a spec
gets the same verdict in the same words: a 422 now, or the failed job's error."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from workers.config import JobConfig
from workers.feasibility import Refused
from workers.jobrun import one_line
from workers.sink import JobSink

ZOO = {
    "model": {"zoo": "resnet20"},
    "data": {"name": "synthetic", "input_size": 32},
    "strategy": {"name": "uniform"},
}
FEASIBLE, INFEASIBLE = {"flops": 0.5}, {"flops": 0.0001}


class ReachedTraining(Exception):
    """Raised instead of training: the job's own check let the target through."""


def _app(tmp_path, wait: float):
    settings = Settings(data_dir=tmp_path / "data", scheduler=False, trace_wait_seconds=wait)
    return create_app(settings)


def _resolved(store, job_id: int) -> JobConfig:
    return JobConfig.model_validate(store.get_job(job_id).config)


def _job_check(cfg: JobConfig, out, monkeypatch) -> str | None:
    """What the job's own run says of `cfg` before training: its recorded error line, or None
    when the check passed (the run went on to train, or, with weights, to the end of `prepare`)."""
    from workers import pipeline

    def no_training(*args, **kwargs):
        raise ReachedTraining

    monkeypatch.setattr(pipeline, "fit", no_training)
    try:
        out.mkdir(parents=True, exist_ok=True)
        pipeline.prepare(cfg, out, JobSink(), False, torch.device("cpu"))
    except ReachedTraining:
        return None
    except Refused as exc:
        return one_line(exc)
    return None


def test_a_zoo_submit_that_cannot_wait_for_the_trace_is_accepted_and_traced_off_the_api(tmp_path, tracer):
    from service import submit

    app = _app(tmp_path, wait=0)  # no trace is ready in no time
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        r = client.post("/v1/jobs", json={**ZOO, "target": INFEASIBLE}, headers=h)
        assert r.status_code == 201, r.text
        made = tracer.traced(wait=120)  # once the trace process has traced what it began
        assert [(t["key"][0], t["input_shape"], t["ok"]) for t in made] == [("zoo", [3, 32, 32], True)]
        app.state.settings.trace_wait_seconds = 60  # a busy test machine may take over 0.025 s to answer
        r = client.post("/v1/jobs", json={**ZOO, "target": INFEASIBLE}, headers=h)  # now traced: a 422
        assert r.status_code == 422
        assert r.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert len(tracer.traced()) == 1
    assert submit.TRACES.made == []  # nothing was ever traced in the API process


@pytest.mark.parametrize("target", [FEASIBLE, INFEASIBLE], ids=["feasible", "infeasible"])
def test_a_zoo_target_gets_the_same_verdict_at_submit_and_in_the_job(tmp_path, tracer, monkeypatch, target):
    from service import submit
    from service.tracer import Tracer

    app = _app(tmp_path / "now", wait=60)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        now = client.post("/v1/jobs", json={**ZOO, "target": target}, headers=h)
    restarted = Tracer()  # a restarted server: nothing traced
    monkeypatch.setattr(submit, "TRACER", restarted)
    try:
        app = _app(tmp_path / "later", wait=0)
        with TestClient(app) as client:
            store = app.state.store
            h = {"Authorization": f"Bearer {store.create_token('alpha')}"}
            later = client.post("/v1/jobs", json={**ZOO, "target": target}, headers=h)
            assert later.status_code == 201, later.text
            job_line = _job_check(_resolved(store, later.json()["id"]), tmp_path / "job", monkeypatch)
    finally:
        restarted.close()
    if target is FEASIBLE:
        assert now.status_code == 201, now.text
        assert job_line is None
    else:
        assert now.status_code == 422
        assert now.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert job_line == now.json()["detail"]
    assert submit.TRACES.made == []


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    from corpus import INPUT_SHAPE, build

    from pruning.export import export_program

    return export_program(build("resnet_basic"), tmp_path_factory.mktemp("program") / "net.pt2", INPUT_SHAPE)


@pytest.mark.parametrize("target", [FEASIBLE, INFEASIBLE], ids=["feasible", "infeasible"])
def test_an_uploaded_program_gets_the_same_verdict_at_submit_and_in_the_job(
    tmp_path, tracer, monkeypatch, program, target
):
    from service import submit
    from service.tracer import Tracer

    app = _app(tmp_path, wait=60)  # a busy test machine may take over 0.025 s to answer
    with TestClient(app) as client:
        store = app.state.store
        h = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        up = client.post("/v1/models", files={"file": ("net.pt2", program.read_bytes())}, headers=h)
        assert up.status_code == 201, up.text
        assert [(t["key"][0], t["ok"]) for t in tracer.traced(wait=0)] == [("program", True)]  # traced at upload
        spec = {"model": {"upload": up.json()["id"]}, "data": {"name": "synthetic"}, "strategy": {"name": "uniform"}}
        now = client.post("/v1/jobs", json={**spec, "target": target}, headers=h)  # the upload's trace
        restarted = Tracer()  # a restart: the upload's trace is gone
        monkeypatch.setattr(submit, "TRACER", restarted)
        app.state.settings.trace_wait_seconds = 0
        try:
            later = client.post("/v1/jobs", json={**spec, "target": target}, headers=h)
            assert later.status_code == 201, later.text
            misfit = client.post("/v1/jobs", json={**spec, "data": {"name": "digits"}, "target": target}, headers=h)
            assert misfit.status_code == 422  # the data is still checked at once, on the upload's shapes
            assert misfit.json()["detail"].startswith("data: data set digits gives 1x32x32 images")
            made = restarted.traced(wait=120)
            assert [(t["key"][0], t["ok"]) for t in made] == [("program", True)]  # in the trace process
        finally:
            restarted.close()
        job_line = _job_check(_resolved(store, later.json()["id"]), tmp_path / "job", monkeypatch)
    if target is FEASIBLE:
        assert now.status_code == 201, now.text
        assert job_line is None
    else:
        assert now.status_code == 422
        assert now.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert job_line == now.json()["detail"]
    assert submit.TRACES.made == []
