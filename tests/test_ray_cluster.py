"""A real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and one added
node, one CPU each): the server is pointed at it with `RAY_ADDRESS`, runs a job, and the
candidates' metadata show that evaluations ran on both nodes. The same path a multi-machine
cluster takes (README, "Running on a Ray cluster"); the cluster is shut down at the end, and no
`ray stop` is ever run (it would end every Ray process on the machine)."""

from __future__ import annotations

import pytest
from test_service_support import train_digits_convnet

from service.client import Client
from service.devserver import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_job_evaluations_run_on_both_nodes(two_nodes, tmp_path):
    path = tmp_path / "convnet.safetensors"
    args = train_digits_convnet(path, epochs=1.0)
    srv = ServerProcess(tmp_path / "data", RAY_ADDRESS=two_nodes.address, SECATEURS_EVAL_WORKERS="2")
    srv.start()
    try:
        out = srv.cli("token", "create", "--team", "vision")
        assert out.returncode == 0, out.stderr
        client = Client(srv.url, out.stdout.strip().splitlines()[-1])
        model = client.upload_model(path, "convnet", args)
        job = client.submit(
            {
                "model": {"upload": model["id"]},
                "data": {"name": "digits"},
                "target": {"flops": 0.5},
                "strategy": {"name": "eagleeye", "options": {"n_samples": 6, "top_k": 1, "finetune_steps": 5}},
                "search": {"batch_size": 2},
                "finetune": {"max_steps": 20},
            }
        )
        done = client.wait(job["id"], poll=0.5, timeout=600)
        assert done["status"] == "succeeded", done
        cands = client.candidates(job["id"])
        evaluated = [c for c in cands if c["meta"].get("worker_node")]
        assert len(evaluated) == len(cands) >= 6
        nodes = {c["meta"]["worker_node"] for c in evaluated}
        cluster_nodes = {two_nodes.head_node.node_id, *(n.node_id for n in two_nodes.worker_nodes)}
        assert nodes == cluster_nodes, f"evaluations ran on {nodes}, the cluster's nodes are {cluster_nodes}"
    finally:
        srv.stop()
