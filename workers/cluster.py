"""Connecting to Ray: an existing cluster when `RAY_ADDRESS` is set, otherwise a local one
started in this process (small and without the dashboard, so it fits a laptop or CI)."""

from __future__ import annotations

import os
from typing import Any

# glibc malloc settings for Ray's worker processes. In a Ray worker glibc keeps its default
# mmap threshold (it does not grow it as it does in a plain Python process), so every large
# tensor of a forward pass is a fresh mmap: on resnet20 at 16 px an evaluation actor took 185,000
# page faults and 10-25% more CPU than the same evaluations in the driver (549 faults). Fixing the
# threshold at glibc's own dynamic ceiling (32 MiB) and trimming above 64 MiB gives the actor the
# driver's behaviour (4 faults). A value already set in the environment wins.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


def worker_runtime_env() -> dict[str, Any]:
    """The `runtime_env` for Secateurs' Ray tasks and actors (see MALLOC_ENV)."""
    return {"env_vars": {k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}}


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Initialise Ray once per process (`address` or RAY_ADDRESS: an existing cluster; unset or
    "local": start one here with `num_cpus`); returns the cluster's resources."""
    import signal
    import threading

    import ray

    if not ray.is_initialized():
        # ray.init installs a SIGTERM handler that exits at once; keep the caller's (uvicorn's
        # graceful shutdown) when called from the main thread.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "log_to_driver": False,
            "runtime_env": worker_runtime_env(),
        }
        if address and address != "local":
            kwargs["address"] = address
        else:
            kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus)  # never join a stray `ray start`
        ray.init(**kwargs)
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return ray.cluster_resources()


def shutdown_ray() -> None:
    """Disconnect (and stop a local cluster this process started)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
