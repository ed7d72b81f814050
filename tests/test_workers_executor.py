"""The Ray fan-out executor on a real local Ray (2 CPUs): proposals are spread over several
actor processes holding the base model from the object store, and each result equals what
the evaluator gives in this process for the same policy."""

from __future__ import annotations

import pytest

from pruning.data import calibration_batches
from pruning.models import build_model
from search.base import Proposal
from search.evaluators import EvalContext, make_evaluator
from search.space import SearchSpace


@pytest.fixture(scope="module")
def ray_local():
    from workers.cluster import ensure_ray, shutdown_ray

    ensure_ray(address="local", num_cpus=2)
    yield
    shutdown_ray()


def test_ray_executor_fans_out_and_matches_local_evaluation(ray_local, digits):
    from workers.executor import RayExecutor

    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    calib = calibration_batches(digits.train, 2, 32, 0)
    space = SearchSpace(model, (1, 16, 16), {"flops": 0.6}, calibration=calib)
    ctx = EvalContext(model=model, data=digits, input_shape=(1, 16, 16), calibration=calib, space=space, val_batches=2)
    local = make_evaluator("adaptive-bn", ctx)
    proposals = [Proposal(id=i, policy=dict.fromkeys(space.keys, 0.1 * (i + 1)), phase="search") for i in range(4)]
    executor = RayExecutor(local, {}, n_workers=2)
    try:
        remote = executor(proposals)
    finally:
        executor.close()
    assert sorted(r.proposal_id for r in remote) == [0, 1, 2, 3]
    assert len({r.meta["worker_pid"] for r in remote}) == 2
    for r in remote:
        want = local.evaluate(proposals[r.proposal_id].policy, "search", r.proposal_id)
        assert (r.flops, r.params) == (want.flops, want.params)
        assert r.score == pytest.approx(want.score, abs=1e-6)


def test_ray_workers_get_the_malloc_settings(ray_local, digits):
    """Without MALLOC_ENV a Ray worker re-faults every large tensor (10-25% more CPU per
    evaluation than the driver); job tasks, their children and the evaluation actors all get it."""
    import ray

    from workers.cluster import MALLOC_ENV
    from workers.executor import RayExecutor

    def _malloc_env(_self: object = None) -> dict[str, str | None]:  # nested: pickled by value for Ray
        import os

        return {k: os.environ.get(k) for k in MALLOC_ENV}

    assert ray.get(ray.remote(_malloc_env).remote()) == MALLOC_ENV  # ensure_ray's job-level env
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    ctx = EvalContext(model=model, data=digits, input_shape=(1, 16, 16), val_batches=1)
    executor = RayExecutor(make_evaluator("plain", ctx), {}, n_workers=1)
    try:
        assert ray.get(executor.actors[0].__ray_call__.remote(_malloc_env)) == MALLOC_ENV
    finally:
        executor.close()


def test_a_malloc_setting_from_the_environment_wins(monkeypatch):
    from workers.cluster import worker_runtime_env

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    env = worker_runtime_env()["env_vars"]
    assert env["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert env["MALLOC_TRIM_THRESHOLD_"] == str(64 << 20)
