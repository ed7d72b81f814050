"""Training, fine-tuning and evaluation: SGD with a cosine schedule by default, optional
knowledge distillation from the unpruned model, seeded, on CUDA when present. What a batch
holds, the loss and the score are the job's task's (`pruning.tasks`; classification when none
is given), so these loops serve every task.

`train` runs a fixed number of epochs or steps; `finetune` is the final fine-tune of a pruned
network: validated, early-stopped, best checkpoint kept, within a step budget
(docs/finetune.md); `fit` trains a network from scratch by that same loop (a job's base model,
`secateurs train`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import DataSplits, dataset_size, make_loader
from .device import get_device
from .tasks import Score, Task, make_task, softened_kl

ProgressFn = Callable[[float, dict], None]
"""Called with progress in [0, 1] and a dict of figures (epoch, loss, ...)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_reproducible(seed: int, threads: int | None = None) -> None:
    """Make a run repeat bit for bit on the same machine: seed everything, ask torch for
    deterministic kernels (the CPU's are; an op without one warns instead of failing) and, when
    `threads` is given, fix torch's CPU thread count (sums split over another number of threads
    round differently, so a trained model differs with it). Another CPU model can differ too:
    oneDNN and MKL pick their kernels by the CPU's vector extensions (`bench/variation.py`)."""
    seed_everything(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, where CUDA is used
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(int(threads))


@dataclass
class TrainConfig:
    """Settings of a training run. Its defaults are the one default for training a network
    from scratch (a job's `train` section and `secateurs train` read them here).

    `fit` (a job's base model, `secateurs train`): with `epochs=None`, the default, until
    validation accuracy stops improving: validated once an epoch, stopped after `patience`
    epochs without a gain, at most `max_epochs`, best epoch's weights kept (`finetune`'s loop);
    with `epochs` set, exactly that many epochs, best epoch's weights kept. `train` runs a fixed
    length and needs `epochs` (or `max_steps`), as every other training loop here does."""

    epochs: float | None = None
    max_epochs: float = 30.0
    patience: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    max_steps: int | None = None
    warmup_epochs: float = 0.0
    """Epochs over which the learning rate rises linearly from about 0 to `lr` (YOLOv8 trains
    with 3): a network started from random weights takes its first steps at a small rate."""


def training_key(zoo: str, args: Mapping[str, object], data: Mapping[str, object], config: TrainConfig) -> str:
    """A hex SHA-256 naming a trained model by everything that decides its weights: the
    architecture and its arguments, the data (name, size, subset, path, split seed), the
    training settings (seed included), and what changes the arithmetic (torch's version and
    CPU thread count). Two runs with the same key train the same weights."""
    facts = {
        "zoo": zoo,
        "args": dict(args),
        "data": dict(data),
        # without a warm-up the settings read as before warm-ups existed (their cached weights stay)
        "train": {k: v for k, v in asdict(config).items() if k != "warmup_epochs" or v},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def cached_weights(cache_dir: str | Path, zoo: str, key: str) -> Path:
    """Where the trained weights named by a `training_key` live in a cache folder."""
    return Path(cache_dir) / f"{zoo}-{key[:24]}.safetensors"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: KL between softened distributions, scaled by T^2."""
    return softened_kl(student_logits, teacher_logits, temperature)


def default_task(task: Task | None) -> Task:
    """`task`, or classification (the task of every loop called without one)."""
    return task if task is not None else make_task()


def make_optimizer(
    model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """The SGD (Nesterov momentum, weight decay) every training loop here uses."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


def task_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.0,
    kd_temperature: float = 4.0,
    task: Task | None = None,
) -> torch.Tensor:
    """The task's loss of `model` on a batch (`x`, `y` as `task.batch` gives them;
    cross-entropy for classification), blended with distillation from `teacher` with weight
    `kd_alpha` when both are given."""
    task = default_task(task)
    out = task.forward(model, x)
    loss = task.loss(out, y)
    if teacher is not None and kd_alpha > 0:
        with torch.no_grad():
            t_out = task.forward(teacher, x)
        loss = (1 - kd_alpha) * loss + kd_alpha * task.kd_loss(out, t_out, kd_temperature)
    return loss


def training_setup(model: nn.Module, data: Dataset | DataLoader, cfg: TrainConfig, device: str | torch.device | None):
    """Seed, move the model to its device in train mode, and build the shuffled loader, step
    count and SGD + cosine schedule every training loop here shares. Returns
    `(device, loader, steps_per_epoch, total_steps, optimizer, scheduler)`."""
    if cfg.epochs is None and cfg.max_steps is None:
        raise ValueError("a fixed-length training run needs epochs or max_steps (`fit` trains until no gain)")
    seed_everything(cfg.seed)
    dev = get_device(device)
    model.to(dev).train()
    loader = data if isinstance(data, DataLoader) else make_loader(data, cfg.batch_size, shuffle=True, seed=cfg.seed)
    steps_per_epoch = max(1, len(loader))
    total = max(1, round(cfg.epochs * steps_per_epoch)) if cfg.epochs is not None else max(1, int(cfg.max_steps or 1))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    warmup = warmup_steps(cfg.warmup_epochs, steps_per_epoch)
    if warmup:
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_factor(step, warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
        )
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return dev, loader, steps_per_epoch, total, opt, sched


def warmup_steps(epochs: float, steps_per_epoch: int) -> int:
    """The steps of a warm-up `epochs` long."""
    return math.ceil(epochs * steps_per_epoch - 1e-9) if epochs > 0 else 0


def warmup_factor(step: int, warmup: int) -> float:
    """The share of the learning rate step `step` (from 0) takes in a linear warm-up of
    `warmup` steps: 1/warmup at the first step, 1 from step `warmup - 1` on."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def train(
    model: nn.Module,
    data: Dataset | DataLoader,
    config: TrainConfig,
    teacher: nn.Module | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = "auto",
    task: Task | None = None,
) -> nn.Module:
    """Train `model` in place for a fixed length and return it (`fit` trains until no gain).

    `epochs` may be fractional; `max_steps` caps the optimizer steps (short fine-tunes).
    `teacher` enables distillation with weight `kd_alpha`; `extra_loss(model)` adds a penalty
    (e.g. Network Slimming's L1 on BN gammas); `after_step(model)` runs after each step (e.g.
    re-applying unstructured masks). `task` reads the batches and gives the loss
    (classification when None)."""
    task = default_task(task)
    dev, loader, steps_per_epoch, total, opt, sched = training_setup(model, data, config, device)
    if teacher is not None:
        teacher.to(dev).eval()
    step = 0
    while step < total:
        for batch in loader:
            x, y = task.batch(batch, dev)
            loss = task_loss(model, x, y, teacher, config.kd_alpha, config.kd_temperature, task)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            step += 1
            if progress is not None and (step % steps_per_epoch == 0 or step == total):
                progress(step / total, {"step": step, "epoch": step / steps_per_epoch, "loss": float(loss.detach())})
            if step >= total:
                break
    return model.eval()


@torch.no_grad()
def evaluate_score(
    model: nn.Module,
    data: Dataset | DataLoader,
    batch_size: int = 256,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    task: Task | None = None,
) -> Score:
    """The task's score of `model` on `data` (top-1 accuracy for classification), its name and
    extras (model left in eval mode, on its own device unless given)."""
    task = default_task(task)
    dev = get_device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size)
    metric = task.metric()
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = task.batch(batch, dev)
        metric.update(task.forward(model, x), y)
    return metric.compute()


def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    batch_size: int = 256,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    task: Task | None = None,
) -> float:
    """The task's score of `model` on `data` (`evaluate_score`'s value): top-1 accuracy in
    [0, 1] for classification."""
    return evaluate_score(model, data, batch_size, max_batches, device, task).value


Schedule = Literal["plateau", "cosine"]
SCHEDULES: tuple[Schedule, ...] = ("plateau", "cosine")


@dataclass
class FinetuneConfig:
    """Settings of the final fine-tune of a pruned network (`finetune`); docs/finetune.md.

    Default (`epochs=None`): train until validation accuracy stops improving, at most
    `max_steps` optimizer steps. Validate every `eval_every` steps (None: one epoch, clamped
    to [20, 200] steps); stop after `patience` validations without an improvement of more
    than `min_delta`. The learning rate follows a cosine over `max_steps` (so a short budget
    still anneals; over the default budget it barely moves before patience ends a run);
    `schedule="plateau"` also multiplies it by `decay_factor` after `max(1, patience // 2)`
    validations without improvement (twice before it stops at the default patience 5),
    `"cosine"` does not.

    Explicit length (`epochs` set): exactly `ceil(epochs * steps_per_epoch)` steps with a
    cosine schedule over them, no early stop; `max_steps` and `patience` do not apply.

    In both modes the weights given count as the first checkpoint (validated before the first
    step) and the best-by-validation weights are the ones returned (`keep_best=False`: the
    last weights instead). `val_batches` caps each validation (None: the whole split).

    The defaults (lr 0.05, the training rate, rather than the customary 0.01; budget 3,000
    steps) were measured with `bench/finetune_budget.py`: on digits (1,079 training images) a
    40%-FLOPs resnet20 reaches 99.2% in about 270 steps where lr 0.01 reaches 97.7%, and on
    Fashion-MNIST (55k) both rates end level at the budget (docs/finetune.md)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    max_steps: int = 3000
    epochs: float | None = None
    schedule: Schedule = "plateau"
    patience: int = 5
    eval_every: int | None = None
    min_delta: float = 0.0
    decay_factor: float = 0.1
    keep_best: bool = True
    val_batches: int | None = None
    seed: int = 0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    warmup_steps: int = 0
    """Steps over which the learning rate rises linearly to `lr`, under the cosine envelope
    (training from scratch; a fine-tune starts from trained weights and needs none)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"fine-tune schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs is None and int(self.max_steps) < 0:
            raise ValueError(f"fine-tune max_steps must be >= 0, got {self.max_steps}")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"fine-tune epochs must be >= 0, got {self.epochs}")
        if int(self.patience) < 1:
            raise ValueError(f"fine-tune patience must be >= 1, got {self.patience}")
        if self.eval_every is not None and int(self.eval_every) < 1:
            raise ValueError(f"fine-tune eval_every must be >= 1, got {self.eval_every}")
        if int(self.warmup_steps) < 0:
            raise ValueError(f"fine-tune warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class FinetuneOutcome:
    """What a `finetune` run did: optimizer `steps` run, validation accuracy of the weights
    given (`start_val`) and of the weights returned (`best_val`, reached at `best_step`; 0 =
    the weights given), whether patience ended it before its budget (`stopped_early`), and
    `history`: one `(step, val_acc, lr)` per validation, the first at step 0."""

    steps: int
    best_val: float
    start_val: float
    best_step: int
    stopped_early: bool
    budget: int
    eval_every: int
    history: list[tuple[int, float, float]]
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """Plain figures for a report (the history as lists)."""
        return {
            "steps": self.steps,
            "best_val": self.best_val,
            "start_val": self.start_val,
            "best_step": self.best_step,
            "stopped_early": self.stopped_early,
            "budget": self.budget,
            "eval_every": self.eval_every,
            "seconds": self.seconds,
            "history": [list(h) for h in self.history],
        }


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over `train_size` samples: one a batch, the last one partial
    (the loaders here keep it)."""
    return max(1, math.ceil(train_size / batch_size))


def budget_steps(config: FinetuneConfig, train_size: int) -> int:
    """The step budget of a `finetune` run on `train_size` samples: exactly
    `ceil(epochs * steps_per_epoch)` when `epochs` is set, else `max_steps` (patience may end it
    sooner)."""
    if config.epochs is None:
        return int(config.max_steps)
    return math.ceil(config.epochs * steps_per_epoch(train_size, config.batch_size) - 1e-9)


def default_eval_every(steps_per_epoch: int) -> int:
    """Steps between validations when not set: one epoch, clamped to [20, 200]."""
    return max(20, min(200, int(steps_per_epoch)))


def _batches(loader: DataLoader):
    while True:
        yield from loader


def finetune(
    model: nn.Module,
    data,
    config: FinetuneConfig | None = None,
    teacher: nn.Module | None = None,
    device: str | torch.device | None = "auto",
    progress: ProgressFn | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    task: Task | None = None,
) -> FinetuneOutcome:
    """Fine-tune `model` in place on `data.train`, validating on `data.val` (a
    `pruning.data.DataSplits`), and leave the best-by-validation weights in it (see
    `FinetuneConfig`); the model ends in eval mode. `teacher` distils with weight `kd_alpha`;
    `extra_loss(model)` adds a penalty, as in `train`. `progress(fraction, info)` is called
    after each validation with fraction = steps / budget and once more with 1.0 at the end.
    `task` gives the loss and the validation score (classification when None; "val_acc" in
    the progress figures and the history is that score)."""
    cfg = config or FinetuneConfig()
    task = default_task(task)
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    dev = get_device(device)
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
    loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    train_size = dataset_size(data.train)
    per_epoch = steps_per_epoch(train_size, cfg.batch_size)
    fixed = cfg.epochs is not None
    budget = budget_steps(cfg, train_size)
    every = int(cfg.eval_every) if cfg.eval_every is not None else default_eval_every(per_epoch)
    decays = not fixed and cfg.schedule == "plateau"
    decay_patience = max(1, cfg.patience // 2)

    def validate() -> float:
        acc = evaluate(model, data.val, max_batches=cfg.val_batches, device=dev, task=task)
        model.train()
        return acc

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    opt = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    start_val = validate()
    best_val, best_step, best_state = start_val, 0, snapshot()
    history: list[tuple[int, float, float]] = [(0, start_val, cfg.lr)]
    lr = base_lr = cfg.lr  # base_lr: what the plateau decays have left of cfg.lr
    since_best = since_change = 0
    stopped_early = False
    step = 0
    batches = _batches(loader)
    loss = torch.zeros(())
    while step < budget:
        # a cosine envelope over the budget (so a short budget still anneals), under the plateau decays
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * step / budget)) * warmup_factor(step, cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = task.batch(next(batches), dev)
        loss = task_loss(model, x, y, teacher, cfg.kd_alpha, cfg.kd_temperature, task)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % every and step < budget:
            continue
        acc = validate()
        history.append((step, acc, lr))
        if acc > best_val + cfg.min_delta:
            since_best = since_change = 0
        else:
            since_best += 1
            since_change += 1
        if acc >= best_val:  # ties go to the later, longer-trained weights
            best_val, best_step, best_state = acc, step, snapshot()
        if progress is not None:
            progress(
                step / max(1, budget),
                {
                    "step": step,
                    "epoch": step / per_epoch,
                    "loss": float(loss.detach()),
                    "val_acc": acc,
                    "best_val": best_val,
                    "lr": lr,
                },
            )
        if fixed or step >= budget:
            continue
        if since_best >= cfg.patience:
            stopped_early = True
            break
        if decays and since_change >= decay_patience:
            base_lr *= cfg.decay_factor
            since_change = 0
    if cfg.keep_best:
        model.load_state_dict(best_state)
    else:
        best_val, best_step = history[-1][1], history[-1][0]
    model.eval()
    if progress is not None:
        progress(
            1.0,
            {
                "step": step,
                "epoch": step / per_epoch,
                "loss": float(loss.detach()),
                "val_acc": best_val,
                "best_val": best_val,
                "lr": lr,
                "done": True,
            },
        )
    return FinetuneOutcome(
        steps=step,
        best_val=best_val,
        start_val=start_val,
        best_step=best_step,
        stopped_early=stopped_early,
        budget=budget,
        eval_every=every,
        history=history,
        seconds=time.perf_counter() - t0,
    )


def fit(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig | None = None,
    device: str | torch.device | None = "auto",
    progress: ProgressFn | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    task: Task | None = None,
) -> FinetuneOutcome:
    """Train `model` from scratch on `data.train` by the final fine-tune's loop (`finetune`),
    validated on `data.val` once an epoch and left with its best epoch's weights: until
    validation accuracy stops improving (`patience` epochs without a gain, at most
    `max_epochs`; the learning rate cut tenfold after half the patience), or exactly `epochs`
    epochs when set (`TrainConfig`). `extra_loss(model)` adds a penalty (e.g. Network
    Slimming's L1 on BN gammas); `task` gives the loss and score (classification when None)."""
    cfg = config or TrainConfig()
    per_epoch = steps_per_epoch(dataset_size(data.train), cfg.batch_size)
    settings = FinetuneConfig(
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        max_steps=math.ceil(cfg.max_epochs * per_epoch - 1e-9),
        epochs=cfg.epochs,
        patience=cfg.patience,
        eval_every=per_epoch,
        seed=cfg.seed,
        kd_alpha=cfg.kd_alpha,
        kd_temperature=cfg.kd_temperature,
        warmup_steps=warmup_steps(cfg.warmup_epochs, per_epoch),
    )
    return finetune(model, data, settings, device=device, progress=progress, extra_loss=extra_loss, task=task)
