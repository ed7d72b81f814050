"""End to end against the real server (subprocess, local Ray with 2 CPUs): upload a convnet
trained on digits, submit, follow, download, rebuild the pruned model and check its FLOPs
meet the target and its accuracy is the one the job reported; cancel a running job; a job
that fails shows its error; SIGKILL the server mid-job (PostgreSQL store), restart it, and
the job resumes (on exactly one of two servers sharing the database) and completes with
candidate ids that have no gaps or duplicates."""

from __future__ import annotations

import json
import time

import pytest
from test_service_support import pg_schema_url, train_digits_convnet

from service.client import Client
from service.devserver import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "convnet.safetensors"
    return path, train_digits_convnet(path, epochs=1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlite-server")
    (root / "datasets").mkdir()
    srv = ServerProcess(root / "data", SECATEURS_ALLOWED_DATA_ROOTS=str(root / "datasets"))
    try:
        yield srv.start()
    finally:
        srv.stop()


def _token(srv: ServerProcess, team: str, *flags: str) -> str:
    out = srv.cli("token", "create", "--team", team, *flags)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("sct_")
    assert " " not in token
    return token


def _wait(client: Client, job_id: int, cond, timeout: float = 240, poll: float = 0.2) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if cond(job):
            return job
        time.sleep(poll)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {client.job(job_id)}")


def test_upload_submit_fetch_rebuild(server, weights, tmp_path):
    from pruning.data import load_dataset
    from pruning.export import load_model
    from pruning.measure import count_flops
    from pruning.models import build_model
    from pruning.train import evaluate

    path, args = weights
    client = Client(server.url, _token(server, "vision"))
    model = client.upload_model(path, "convnet", args)
    job = client.submit(
        {
            "model": {"upload": model["id"]},
            "data": {"name": "digits"},
            "target": {"flops": 0.5},
            "strategy": {"name": "uniform"},
            "finetune": {"epochs": 1, "lr": 0.01},
            "quantize": {"mode": "int8", "calibration_batches": 2},
        }
    )
    done = client.wait(job["id"], poll=0.5, timeout=300)
    assert done["status"] == "succeeded", done
    summary = done["summary"]
    cands = client.candidates(job["id"])
    assert [c["id"] for c in cands] == list(range(1, len(cands) + 1))
    assert done["candidates_evaluated"] == len(cands) >= 1
    kinds = [e["kind"] for e in client.events(job["id"])]
    assert kinds[:2] == ["queued", "started"]
    assert kinds[-1] == "succeeded"

    arts = {a["name"]: a for a in client.artifacts(job["id"])}
    assert {"model.safetensors", "arch.json", "model.onnx", "report.json", "pareto.png", "channels.png"} <= set(arts)
    assert all(a["url"].startswith(server.url) and len(a["sha256"]) == 64 for a in arts.values())
    out = tmp_path / "fetched"
    client.download(job["id"], out)
    pruned = load_model(out)
    original_flops = count_flops(build_model("convnet", **args), (1, 16, 16))
    assert count_flops(pruned, (1, 16, 16)) <= 0.5 * original_flops
    assert count_flops(pruned, (1, 16, 16)) == summary["flops_after"]
    test = load_dataset("digits", input_size=16, seed=0).test
    assert evaluate(pruned, test) == pytest.approx(summary["accuracy_after"], abs=1e-9)
    # INT8 beside FP32: the downloaded model.int8.onnx scores what the summary says, timed beside FP32
    from pruning.quantize import onnx_score, qdq_nodes

    q = summary["quantize"]
    assert arts["model.int8.onnx"]["size"] == q["size_bytes_int8"] < q["size_bytes_fp32"]
    assert qdq_nodes(out / "model.int8.onnx") > 0
    assert onnx_score(out / "model.int8.onnx", test) == q["accuracy_int8"]
    assert q["accuracy_fp32"] == pytest.approx(summary["accuracy_after"], abs=1e-9)
    assert q["latency_ms_fp32"] > 0
    assert q["latency_ms_int8"] > 0

    fetched = server.cli("fetch", str(job["id"]), "--out", str(tmp_path / "cli"), "--token", client.token)
    assert fetched.returncode == 0
    assert (tmp_path / "cli" / "arch.json").exists()
    metrics = client.http.get("/metrics").text
    assert 'secateurs_jobs{status="succeeded"} 1.0' in metrics


def test_cancel_stops_a_running_job_within_seconds(server, weights):
    path, args = weights
    client = Client(server.url, _token(server, "cancel-team"))
    model = client.upload_model(path, "convnet", args)
    job = client.submit(
        {
            "model": {"upload": model["id"]},
            "data": {"name": "digits"},
            "target": {"flops": 0.5},
            "strategy": {"name": "eagleeye", "options": {"n_samples": 500, "top_k": 1}},
            "finetune": {"epochs": 0},
        }
    )
    _wait(client, job["id"], lambda j: j["candidates_evaluated"] >= 2)
    t0 = time.monotonic()
    client.cancel(job["id"])
    done = _wait(client, job["id"], lambda j: j["status"] in ("succeeded", "failed", "cancelled"), timeout=30)
    assert done["status"] == "cancelled"
    assert time.monotonic() - t0 < 10
    n = done["candidates_evaluated"]
    time.sleep(1.5)
    assert client.job(job["id"])["candidates_evaluated"] == n < 500
    listed = server.cli("jobs", "--status", "cancelled", "--json", "--token", client.token)
    assert [j["id"] for j in json.loads(listed.stdout.strip().splitlines()[-1])["items"]] == [job["id"]]


def test_failed_job_reports_a_clear_error(server, tmp_path):
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (16, 16), 3).save(png, "PNG")
    folder = server.data_dir.parent / "datasets" / "truncated"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):  # headers that read (so submit accepts them), pixels cut off (so the job fails)
            (folder / cls / f"{i}.png").write_bytes(png.getvalue()[:45])
    client = Client(server.url, _token(server, "fail-team"))
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"model: {{zoo: convnet}}\ndata: {{name: imagefolder, path: {folder}}}\n"
        "target: {flops: 0.5}\nstrategy: {name: uniform}\n"
    )
    submitted = server.cli("submit", str(spec), "--token", client.token)
    assert submitted.returncode == 0, submitted.stderr
    job = {"id": int(submitted.stdout.strip().splitlines()[-1])}
    watched = server.cli("watch", str(job["id"]), "--token", client.token, "--poll", "0.5")
    assert watched.returncode == 1
    assert "truncated" in watched.stderr
    done = client.job(job["id"])
    assert done["status"] == "failed"
    assert "truncated" in done["error"]
    assert "\n" not in done["error"]
    assert done["traceback"] is None  # a team member sees the one line, not the server's files
    admin = Client(server.url, _token(server, "fail-team", "--admin"))
    assert "Traceback" in admin.job(job["id"])["traceback"]
    status = server.cli("status", str(job["id"]), "--token", client.token)
    assert "truncated" in status.stdout


def test_sigkill_mid_job_resumes_without_gaps_or_duplicates(weights, tmp_path):
    path, args = weights
    for url in pg_schema_url():
        first = ServerProcess(tmp_path / "data", url)
        try:
            first.start()
            token = _token(first, "vision")
            client = Client(first.url, token)
            model = client.upload_model(path, "convnet", args)
            spec = {
                "model": {"upload": model["id"]},
                "data": {"name": "digits"},
                "target": {"flops": 0.5},
                "strategy": {"name": "eagleeye", "options": {"n_samples": 10, "top_k": 1, "finetune_steps": 5}},
                "evaluator": {"name": "finetune", "options": {"steps": 6}},
                "finetune": {"epochs": 0.2},
            }
            job = client.submit(spec)
            running = _wait(client, job["id"], lambda j: j["candidates_evaluated"] >= 3)
            assert first.proc is not None
            first_pid = first.proc.pid
            first.kill()
            assert running["status"] == "running"
            assert running["candidates_evaluated"] < 11
        finally:
            first.kill()
        # two servers now share the database: exactly one of them resumes the job
        second, third = ServerProcess(tmp_path / "data", url), ServerProcess(tmp_path / "data", url)
        try:
            second.start()
            third.start()
            client = Client(second.url, token)
            done = _wait(client, job["id"], lambda j: j["status"] in ("succeeded", "failed", "cancelled"), timeout=300)
            assert done["status"] == "succeeded", (done["error"], done["traceback"], client.events(job["id"]))
            assert done["attempts"] == 2
            cands = client.candidates(job["id"])
            assert [c["id"] for c in cands] == list(range(1, 12))
            assert sorted(c["proposal_id"] for c in cands) == list(range(11))
            assert all(c["meta"].get("worker_pid") for c in cands)  # evaluated on the Ray actors
            # the best shown is the strategy's choice (EagleEye's fine-tuned top-1), within the budget
            assert done["best"]["score"] == done["summary"]["search_score"]
            chosen = next(c for c in cands if c["proposal_id"] == done["best"]["proposal_id"])
            assert chosen["flops"] <= done["summary"]["budget"]
            kinds = [e["kind"] for e in client.events(job["id"])]
            assert kinds.count("started") == 2
            assert kinds.count("requeued") == 1
            assert kinds.count("resumed") == 1
            assert kinds[-1] == "succeeded"
            # the events name the scheduler (host, pid) of each run: first, then second or third
            events = client.events(job["id"])
            ran = [e["data"]["scheduler"]["pid"] for e in events if e["kind"] in ("started", "succeeded")]
            assert second.proc is not None
            assert third.proc is not None
            assert ran[0] == first_pid
            assert ran[1] in (second.proc.pid, third.proc.pid)
            assert ran[2] == ran[1]
        finally:
            second.stop()
            third.stop()


def test_a_server_whose_picked_port_was_taken_starts_on_another(tmp_path, monkeypatch):
    """The local Ray the server starts first opens random ports and can take the one picked for
    the server: the start is tried again on a new free port (a port the caller gave is kept)."""
    from service.devserver import PortTaken, ServerProcess

    tries: list[int] = []

    def start_once(self, timeout):
        tries.append(self.port)
        if len(tries) == 1:
            raise PortTaken(f"port {self.port} was taken")
        return self

    monkeypatch.setattr(ServerProcess, "_start_once", start_once)
    monkeypatch.setattr(ServerProcess, "_reap_group", lambda self: None)
    server = ServerProcess(tmp_path / "data").start()
    assert len(tries) == 2
    assert tries[0] != tries[1]
    assert server.url.endswith(f":{tries[1]}")
    tries.clear()
    with pytest.raises(PortTaken):
        ServerProcess(tmp_path / "data", port=8123).start()
    assert tries == [8123]  # the caller's port is not replaced
