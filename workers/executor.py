"""Fan-out evaluation on Ray: the trained base model, the data splits and the calibration
batches go into the object store once; a pool of actors each builds its own search space
and evaluator from them and evaluates the proposals it is handed, so adding Ray workers
raises candidates per second. The returned callable is a `search.runner` executor
(`proposals -> results`)."""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Callable
from typing import Any

import cloudpickle

from search.base import Proposal, Result
from search.evaluators import EvalContext, Evaluator, EvaluatorPool, make_evaluator
from search.space import SearchSpace

from .cluster import worker_runtime_env

Executor = Callable[[list[Proposal]], list[Result]]


def _space_args(space: SearchSpace) -> dict[str, Any]:
    """What rebuilds an equivalent space (its dependency graph holds autograd nodes, which do
    not pickle, so each actor traces its own)."""
    table = space.latency_table
    try:
        cloudpickle.dumps(table)
    except Exception:  # noqa: BLE001 - an unpicklable table is re-measured by the actor
        table = None
    return {
        "target": space.target,
        "min_channels": space.min_channels,
        "max_rate": space.max_rate,
        "prune_stem": space.prune_stem,
        "pinned": dict(space.pinned) or None,
        "round_to": space.round_to,
        "streams": space.streams,
        "criterion": space.criterion,
        "latency_table": table,
        "runtime": space.runtime,
    }


def base_payload(evaluator: Evaluator, evaluator_options: dict[str, Any]) -> dict[str, Any]:
    """The picklable parts of an evaluator's context (model on CPU, data, calibration, space
    args, the task: its teacher, where it has one, on CPU too)."""
    ctx = evaluator.context
    return {
        "model": copy.deepcopy(ctx.model).cpu().eval(),
        "data": ctx.data,
        "input_shape": tuple(ctx.input_shape),
        "criterion": ctx.criterion,
        "calibration": ctx.calibration,
        "seed": ctx.seed,
        "val_batches": ctx.val_batches,
        "batch_size": ctx.batch_size,
        "space": _space_args(ctx.space) if ctx.space is not None else None,
        "evaluator": evaluator.name,
        "evaluator_options": dict(evaluator_options),
        "task": copy.deepcopy(ctx.task).cpu() if ctx.task is not None else None,
    }


class EvalWorker:
    """A Ray actor holding the base model: evaluates proposals with the job's evaluator."""

    def __init__(self, payload: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(1)
        p = payload
        space = None
        if p["space"] is not None:
            s = dict(p["space"])
            space = SearchSpace(p["model"], p["input_shape"], s.pop("target"), calibration=p["calibration"], **s)
        ctx = EvalContext(
            model=p["model"],
            data=p["data"],
            input_shape=p["input_shape"],
            criterion=p["criterion"],
            device="cpu",
            calibration=p["calibration"],
            seed=p["seed"],
            space=space,
            val_batches=p["val_batches"],
            batch_size=p["batch_size"],
            task=p["task"],
        )
        self.pool = EvaluatorPool(make_evaluator(p["evaluator"], ctx, **p["evaluator_options"]))

    def evaluate(self, proposals: list[Proposal]) -> list[Result]:
        """Evaluate proposals in turn (each result names, in `meta`, the Ray node, host and
        process that evaluated it, so operators can see where the work ran)."""
        import ray

        where = {
            "worker_pid": os.getpid(),
            "worker_host": socket.gethostname(),
            "worker_node": ray.get_runtime_context().get_node_id(),
        }
        results = [self.pool.evaluate(p) for p in proposals]
        for r in results:
            r.meta.update(where)
        return results

    def ready(self) -> bool:
        return True


class RayExecutor:
    """Round-robins each batch of proposals over `n_workers` EvalWorker actors."""

    def __init__(
        self, evaluator: Evaluator, evaluator_options: dict[str, Any], n_workers: int = 2, cpus_per_worker: float = 1.0
    ) -> None:
        import ray

        ref = ray.put(base_payload(evaluator, evaluator_options))
        # SPREAD: one actor per node first, so a multi-node cluster evaluates on all its nodes; the
        # runtime env again (a caller may have started Ray itself), see workers.cluster.MALLOC_ENV
        actor = ray.remote(EvalWorker).options(
            num_cpus=cpus_per_worker,
            max_restarts=0,
            scheduling_strategy="SPREAD",
            runtime_env=worker_runtime_env(),
        )
        # never more actors than the cluster has CPUs for: an actor that cannot be placed
        # would hold its share of every batch forever
        fits = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-6)))
        # Ray actor handles: their methods (`.evaluate.remote`) are resolved at run time, which
        # Ray's types cannot follow without `@ray.method` on EvalWorker (and ray imported with it).
        self.actors: list[Any] = [actor.remote(ref) for _ in range(max(1, min(n_workers, fits)))]
        self._next = 0

    def __call__(self, proposals: list[Proposal]) -> list[Result]:
        import ray

        shares: dict[int, list[Proposal]] = {}
        for p in proposals:
            shares.setdefault(self._next, []).append(p)
            self._next = (self._next + 1) % len(self.actors)
        refs = [self.actors[i].evaluate.remote(batch) for i, batch in shares.items()]
        return [r for chunk in ray.get(refs) for r in chunk]

    def close(self) -> None:
        """Kill the actors (frees their CPUs at once)."""
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
