"""Candidate selection as Ray Tune trials with ASHA (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020): the job's `search.selection: asha`.

A strategy's fixed final pick (EagleEye's short fine-tune of its top k) gives every finalist the
same steps. Here the `candidates` best feasible policies of the search each start a Tune trial
that cuts the trained model, re-estimates BN and fine-tunes in chunks at a constant learning
rate, reporting the task's validation score (accuracy for classification) after each chunk;
ASHA stops the trials in the bottom 1/`reduction` of each rung, so for about the same steps
more policies get a short fine-tune and only the promising ones the long one. The winner is
the best trial among those that went furthest. Trials run on the job's Ray (a local one, or
the cluster `RAY_ADDRESS` names); their weights stay where they ran, and the winner's are
rebuilt in the job by replaying its steps (seeded, one thread: the same numbers).

With more than one trial at a time, which trials ASHA stops depends on the order their
results arrive; `max_concurrent=1` makes the selection repeat exactly."""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pruning.bn import recalibrate_bn
from pruning.criteria import get_criterion
from pruning.cut import prune
from pruning.data import DataSplits, make_loader
from pruning.tasks import Task
from pruning.train import default_task, evaluate, make_optimizer, seed_everything, task_loss
from search.base import SearchError

PHASE = "asha"
"""The phase of the selection's results in the job's record."""


@dataclass(frozen=True)
class AshaPlan:
    """A selection's settings: how many policies start, the most steps one gets, ASHA's
    reduction factor, and the short fine-tune's learning rate, batch size and seed."""

    candidates: int = 9
    max_steps: int = 100
    reduction: int = 3
    lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    val_batches: int | None = None

    @property
    def iterations(self) -> int:
        """Chunks the longest trial runs: the largest power of `reduction` not above
        `candidates` (9 candidates, factor 3: rungs after 1, 3 and 9 chunks)."""
        n = 1
        while n * self.reduction <= self.candidates:
            n *= self.reduction
        return n

    @property
    def chunk(self) -> int:
        """Steps per chunk (a trial reports after each)."""
        return max(1, round(self.max_steps / self.iterations))


@dataclass
class Trial:
    """One candidate's trial: its index in the candidates, the steps it ran before ASHA stopped
    it (or it finished), its last validation accuracy and the Ray node it ran on."""

    index: int
    steps: int
    val_acc: float
    node: str = ""


def _cycle(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


class ChunkedFinetune:
    """A short fine-tune run a chunk at a time at a constant learning rate with a seeded data
    order, so a trial stopped after any chunk is replayed exactly by one run of its steps, on
    the task's loss (classification when None)."""

    def __init__(
        self, model: nn.Module, train_set: Dataset, lr: float, batch_size: int, seed: int, task: Task | None = None
    ) -> None:
        seed_everything(seed)
        self.task = default_task(task)
        self.model = model
        self.opt = make_optimizer(model, lr)
        self.batches = _cycle(make_loader(train_set, batch_size, shuffle=True, seed=seed))
        self.steps = 0

    def run(self, steps: int) -> nn.Module:
        """Train `steps` more steps; the model is left in eval mode."""
        self.model.train()
        for _ in range(steps):
            x, y = self.task.batch(next(self.batches))
            loss = task_loss(self.model, x, y, task=self.task)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.steps += steps
        return self.model.eval()


def start_model(
    model: nn.Module,
    kept: Mapping[str, int],
    criterion: str,
    input_shape: Sequence[int],
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> nn.Module:
    """The cut copy of `model` with `kept` channels per group, BN re-estimated: a trial's start."""
    calib = calibration if get_criterion(criterion).needs_data else None
    cut = prune(model, dict(kept), criterion, input_shape=input_shape, calibration=calib)
    recalibrate_bn(cut, calibration)
    return cut


def _trial(config: dict[str, Any], payload: dict[str, Any]) -> None:
    """A Tune trial: cut, then fine-tune chunk by chunk, reporting validation accuracy."""
    import ray
    from ray import tune

    torch.set_num_threads(1)
    p, plan = payload, payload["plan"]
    model = start_model(p["model"], p["kept"][config["index"]], p["criterion"], p["input_shape"], p["calibration"])
    run = ChunkedFinetune(model, p["data"].train, plan.lr, plan.batch_size, plan.seed, p["task"])
    node = ray.get_runtime_context().get_node_id()
    for _ in range(plan.iterations):
        run.run(plan.chunk)
        acc = evaluate(run.model, p["data"].val, max_batches=plan.val_batches, task=p["task"])
        tune.report({"val_acc": acc, "steps": run.steps, "node": node})


def asha_select(
    model: nn.Module,
    data: DataSplits,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]],
    input_shape: Sequence[int],
    criterion: str,
    kept: Sequence[Mapping[str, int]],
    plan: AshaPlan,
    max_concurrent: int = 2,
    on_trial: Callable[[int, int], None] | None = None,
    task: Task | None = None,
) -> list[Trial]:
    """Run one ASHA trial per candidate (`kept`: its channels per group) on the job's Ray and
    return every trial, in candidate order. `on_trial(finished, total)` is called as trials end;
    `task` gives the loss and the score (classification when None)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .cluster import ensure_ray

    ensure_ray()
    payload = {
        "model": copy.deepcopy(model).cpu().eval(),
        "data": data,
        "calibration": list(calibration),
        "input_shape": tuple(input_shape),
        "criterion": criterion,
        "kept": [dict(k) for k in kept],
        "plan": plan,
        "task": copy.deepcopy(default_task(task)).cpu(),  # the trials run on CPUs
    }
    finished: list[int] = []

    class Progress(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            finished.append(1)
            if on_trial is not None:
                on_trial(len(finished), len(kept))

    storage = tempfile.mkdtemp(prefix="secateurs-tune-")
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial, payload=payload), {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(len(kept))))},
            tune_config=tune.TuneConfig(
                metric="val_acc",
                mode="max",
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=plan.iterations,
                    grace_period=1,
                    reduction_factor=plan.reduction,
                ),
                max_concurrent_trials=max(1, max_concurrent),
            ),
            run_config=tune.RunConfig(name="selection", storage_path=storage, verbose=0, callbacks=[Progress()]),
        )
        grid = tuner.fit()
        trials = []
        for r in (grid[i] for i in range(len(grid))):
            m, config = r.metrics, r.config
            if r.error is not None or not m or config is None:
                raise SearchError(f"an ASHA selection trial failed: {r.error}")
            trials.append(Trial(int(config["index"]), int(m["steps"]), float(m["val_acc"]), str(m.get("node", ""))))
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return sorted(trials, key=lambda t: t.index)


def winner(trials: Sequence[Trial]) -> Trial:
    """The best trial among those that ran furthest (a trial ASHA stopped early is not compared
    with longer ones); ties go to the earlier candidate."""
    return max(trials, key=lambda t: (t.steps, t.val_acc, -t.index))


def replay(
    model: nn.Module,
    data: DataSplits,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]],
    input_shape: Sequence[int],
    criterion: str,
    kept: Mapping[str, int],
    plan: AshaPlan,
    steps: int,
    device: torch.device | str = "cpu",
    task: Task | None = None,
) -> nn.Module:
    """The network a trial ended with, rebuilt here: the same cut, BN estimate and `steps` steps
    with the trial's seed and task, on one thread as the trial ran."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cut = start_model(copy.deepcopy(model).cpu().eval(), kept, criterion, input_shape, calibration)
        return ChunkedFinetune(cut, data.train, plan.lr, plan.batch_size, plan.seed, task).run(steps).to(device)
    finally:
        torch.set_num_threads(threads)
