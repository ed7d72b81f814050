"""The ASHA selection (`search.selection: asha`): the final pick among the best candidates runs
as Ray Tune trials under ASHA on the job's Ray, a local one here and a cluster named by
RAY_ADDRESS in a subprocess; the winner's network is rebuilt in the job exactly as its trial
left it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from service.devserver import free_port
from workers.pipeline import run_pipeline
from workers.selection import AshaPlan, Trial, winner
from workers.sink import FileSink, read_resume

ROOT = Path(__file__).resolve().parents[1]
JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "eagleeye", "options": {"n_samples": 8, "top_k": 3, "finetune_steps": 20}},
    "search": {
        "selection": "asha",
        "selection_candidates": 6,
        "selection_steps": 24,
        "selection_reduction": 2,
        "batch_size": 1,
    },
    "train": {"epochs": 1},
    "finetune": {"max_steps": 0},
    "onnx": False,
}


@pytest.fixture(scope="module")
def ray_local():
    from workers.cluster import ensure_ray, shutdown_ray

    ensure_ray(address="local", num_cpus=2)
    yield
    shutdown_ray()


def test_the_plan_halves_to_one_and_the_winner_ran_furthest() -> None:
    plan = AshaPlan(candidates=9, max_steps=90, reduction=3)
    assert (plan.iterations, plan.chunk) == (9, 10)  # rungs after 10, 30 and 90 steps
    assert AshaPlan(candidates=6, max_steps=24, reduction=2).iterations == 4
    assert AshaPlan(candidates=2, reduction=3).iterations == 1
    trials = [Trial(0, 10, 0.99), Trial(1, 90, 0.90), Trial(2, 90, 0.93), Trial(3, 90, 0.93)]
    assert winner(trials).index == 2  # a short trial's score is not compared with long ones


def test_asha_picks_among_the_candidates_on_local_ray(ray_local, tmp_path: Path) -> None:
    summary = run_pipeline(JOB, tmp_path, FileSink(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"sample", "asha"}  # EagleEye's own top-k fine-tunes were not run
    trials = [r for r in rows if r["phase"] == "asha"]
    assert len(trials) == 6
    steps = [r["meta"]["steps"] for r in trials]
    assert max(steps) == 24
    assert min(steps) < 24  # ASHA stopped some trials early
    assert sum(steps) < 6 * 24
    sel = summary["selection"]
    assert sel["steps"] == sum(steps)
    assert summary["finetune_start"] == "asha"
    win = next(r for r in trials if r["proposal_id"] == sel["winner"])
    assert win["meta"]["steps"] == 24
    assert summary["search_score"] == win["score"]
    # the network the job fine-tunes is the winner's as its trial left it (no fine-tune here)
    assert summary["val_accuracy_after"] == win["score"]
    assert summary["flops_after"] <= summary["budget"]
    # the trials' sources are the best-scored sampled candidates, one per network
    samples = sorted((r for r in rows if r["phase"] == "sample"), key=lambda r: (-r["score"], r["proposal_id"]))
    assert [r["meta"]["source"] for r in trials] == [r["proposal_id"] for r in samples[:6]]
    # a resumed job reuses the recorded trials: the same pick without running them again
    again = run_pipeline(JOB, tmp_path, FileSink(tmp_path), resume=read_resume(tmp_path))
    assert again["selection"] == sel
    phases = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in phases if e["kind"] == "phase" and e["data"]["phase"] == "select") == 1


PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)

DRIVER = """
import json, sys
import ray
from workers.pipeline import run_pipeline
from workers.sink import FileSink
job, out = json.loads(sys.argv[1]), sys.argv[2]
summary = run_pipeline(job, out, FileSink(out))
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "selection": summary["selection"],
                  "nodes": [n["NodeID"] for n in ray.nodes()]}))
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_asha_runs_on_the_cluster_ray_address_names(tmp_path: Path) -> None:
    port = free_port()
    # Ray 2.60 heads started by `ray start` may ask clients for a token; this throwaway one does not
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # a short session folder: Ray's socket paths under pytest's long tmp_path exceed the
    # 107-byte limit of a Unix socket name, and the head would not start
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 - closed in the finally below
    # every port the head would otherwise take at a fixed default (dashboard agent, metrics,
    # runtime-env agent) is a free one, so another Ray on the machine cannot keep it from starting
    ports = [f"--{name}={free_port()}" for name in PORT_FLAGS]
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            *ports,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: stopped below without touching other Rays
    )
    up = time.monotonic() + 180
    while head.poll() is None and time.monotonic() < up:  # wait for its GCS before any driver
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(1)
    log.flush()
    assert head.poll() is None, "ray start --head exited: " + (Path(temp) / "head.log").read_text()[-3000:]
    try:
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        job = {
            **JOB,
            "strategy": {"name": "eagleeye", "options": {"n_samples": 4}},
            "search": {**JOB["search"], "selection_candidates": 3, "selection_steps": 6},
            "train": {"epochs": 0.5},
        }
        deadline = time.monotonic() + 300
        while True:  # the head takes a while to come up on a busy machine
            proc = subprocess.run(
                [sys.executable, "-c", DRIVER, json.dumps(job), str(tmp_path / "out")],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=ROOT,
                env=env,
                check=False,
            )
            if proc.returncode == 0 or "Failed to connect" not in proc.stderr or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["gcs"].endswith(f":{port}")  # the job joined that cluster, not a local Ray
        rows = [json.loads(line) for line in (tmp_path / "out" / "candidates.jsonl").read_text().splitlines()]
        trials = [r for r in rows if r["phase"] == "asha"]
        assert len(trials) == 3
        assert {r["meta"]["node"] for r in trials} <= set(got["nodes"])  # the trials ran on its nodes
    finally:
        with contextlib.suppress(ProcessLookupError):  # a head that failed to start has gone already
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_service_runs_an_asha_selection_with_the_iterative_schedule(tmp_path: Path) -> None:
    """Through REST on the real server (local Ray, 2 CPUs): the job's Ray task closes its
    evaluation actors, runs the ASHA trials, then the iterative rounds."""
    from service.client import Client
    from service.devserver import ServerProcess

    srv = ServerProcess(tmp_path / "data").start(timeout=300)
    try:
        out = srv.cli("token", "create", "--team", "vision")
        assert out.returncode == 0, out.stderr
        client = Client(srv.url, out.stdout.strip().splitlines()[-1])
        spec = {
            **JOB,
            "search": {**JOB["search"], "selection_candidates": 4, "selection_steps": 8, "batch_size": 2},
            "finetune": {"epochs": 0.5, "prune_schedule": "iterative", "rounds": 2},
        }
        job = client.submit(spec)
        done = client.wait(job["id"], poll=1.0, timeout=1200)
        assert done["status"] == "succeeded", done
        summary = done["summary"]
        assert summary["selection"]["method"] == "asha"
        assert summary["selection"]["candidates"] == 4
        assert [r["round"] for r in summary["finetune_rounds"]] == [1, 2]
        assert summary["flops_after"] <= summary["budget"]
        phases = {c["phase"] for c in client.candidates(job["id"])}
        assert phases == {"sample", "asha"}
        kinds = [e["kind"] for e in client.events(job["id"])]
        assert "selection" in kinds
        assert kinds.count("round") == 2
    finally:
        srv.stop()
