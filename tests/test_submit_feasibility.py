"""A submit never traces a network in the request: a trace it does not have is made on the
background thread, and when it is not ready in `trace_wait_seconds` the job is accepted and
checks the same target itself before training (`workers.pipeline.prepare`). Either way a spec
gets the same verdict in the same words: a 422 now, or the failed job's error."""

from __future__ import annotations

import threading

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


@pytest.fixture
def traces(monkeypatch):
    """A fresh trace cache (as after a restart), every submit-side trace recorded with the
    thread that made it, and a gate: while `gate` is clear, those traces wait (a slow network)."""
    import search.space
    from service import submit

    made: list[tuple[str, tuple[int, ...]]] = []
    gate = threading.Event()
    gate.set()
    real = search.space.trace_space

    def recorded(model, input_shape):
        made.append((threading.current_thread().name, tuple(input_shape)))
        assert gate.wait(30)
        return real(model, input_shape)

    monkeypatch.setattr(submit, "TRACES", submit.Traces())
    monkeypatch.setattr(search.space, "trace_space", recorded)
    yield made, gate
    gate.set()


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


def test_a_zoo_submit_that_cannot_wait_for_the_trace_is_accepted_and_traced_off_the_request(
    tmp_path, traces, monkeypatch
):
    made, gate = traces
    gate.clear()  # the trace takes longer than the submit may wait
    app = _app(tmp_path, wait=0.05)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        r = client.post("/v1/jobs", json={**ZOO, "target": INFEASIBLE}, headers=h)
        assert r.status_code == 201, r.text
        assert made == [("secateurs-trace", (3, 32, 32))]  # on the background thread, never the request's
        gate.set()
        from service import submit

        key = next(iter(submit.TRACES._cache))
        assert submit.TRACES._cache[key].ready.wait(30)
        r = client.post("/v1/jobs", json={**ZOO, "target": INFEASIBLE}, headers=h)  # now traced: a 422
        assert r.status_code == 422
        assert r.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert len(made) == 1


@pytest.mark.parametrize("target", [FEASIBLE, INFEASIBLE], ids=["feasible", "infeasible"])
def test_a_zoo_target_gets_the_same_verdict_at_submit_and_in_the_job(tmp_path, traces, monkeypatch, target):
    made, gate = traces
    app = _app(tmp_path / "now", wait=60)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}
        now = client.post("/v1/jobs", json={**ZOO, "target": target}, headers=h)
    from service import submit

    monkeypatch.setattr(submit, "TRACES", submit.Traces())  # a restarted server: nothing traced
    gate.clear()
    app = _app(tmp_path / "later", wait=0)
    with TestClient(app) as client:
        store = app.state.store
        h = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        later = client.post("/v1/jobs", json={**ZOO, "target": target}, headers=h)
        assert later.status_code == 201, later.text
        job_line = _job_check(_resolved(store, later.json()["id"]), tmp_path / "job", monkeypatch)
    if target is FEASIBLE:
        assert now.status_code == 201, now.text
        assert job_line is None
    else:
        assert now.status_code == 422
        assert now.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert job_line == now.json()["detail"]
    assert all(thread == "secateurs-trace" for thread, _ in made)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    from corpus import INPUT_SHAPE, build

    from pruning.export import export_program

    return export_program(build("resnet_basic"), tmp_path_factory.mktemp("program") / "net.pt2", INPUT_SHAPE)


@pytest.mark.parametrize("target", [FEASIBLE, INFEASIBLE], ids=["feasible", "infeasible"])
def test_an_uploaded_program_gets_the_same_verdict_at_submit_and_in_the_job(
    tmp_path, traces, monkeypatch, program, target
):
    made, gate = traces
    app = _app(tmp_path, wait=0.05)
    with TestClient(app) as client:
        store = app.state.store
        h = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        up = client.post("/v1/models", files={"file": ("net.pt2", program.read_bytes())}, headers=h)
        assert up.status_code == 201, up.text
        spec = {"model": {"upload": up.json()["id"]}, "data": {"name": "synthetic"}, "strategy": {"name": "uniform"}}
        now = client.post("/v1/jobs", json={**spec, "target": target}, headers=h)  # traced at upload
        assert len(made) == 1
        assert made[0][0] != "secateurs-trace"
        from service import submit

        monkeypatch.setattr(submit, "TRACES", submit.Traces())  # a restart: the upload's trace is gone
        gate.clear()
        later = client.post("/v1/jobs", json={**spec, "target": target}, headers=h)
        assert later.status_code == 201, later.text
        misfit = client.post("/v1/jobs", json={**spec, "data": {"name": "digits"}, "target": target}, headers=h)
        assert misfit.status_code == 422  # the data is still checked at once, on the upload's shapes
        assert misfit.json()["detail"].startswith("data: data set digits gives 1x32x32 images")
        gate.set()
        assert all(entry.ready.wait(60) for entry in submit.TRACES._cache.values())
        assert [thread for thread, _ in made[1:]] == ["secateurs-trace"]  # converted and traced off the request
        job_line = _job_check(_resolved(store, later.json()["id"]), tmp_path / "job", monkeypatch)
    if target is FEASIBLE:
        assert now.status_code == 201, now.text
        assert job_line is None
    else:
        assert now.status_code == 422
        assert now.json()["detail"].startswith("target: target flops<=0.01% is infeasible")
        assert job_line == now.json()["detail"]
