"""Training, fine-tuning and evaluation: SGD with a cosine schedule by default, optional
knowledge distillation from the unpruned model, seeded, on CUDA when present."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import make_loader
from .device import get_device

ProgressFn = Callable[[float, dict], None]
"""Called with progress in [0, 1] and a dict of figures (epoch, loss, ...)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainConfig:
    """Settings of a training or fine-tuning run."""

    epochs: float = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    max_steps: Optional[int] = None


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: KL between softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean") * t * t


def training_setup(model: nn.Module, data: Dataset | DataLoader, cfg: TrainConfig, device: str | torch.device | None):
    """Seed, move the model to its device in train mode, and build the shuffled loader, step
    count and SGD + cosine schedule every training loop here shares. Returns
    `(device, loader, steps_per_epoch, total_steps, optimizer, scheduler)`."""
    seed_everything(cfg.seed)
    dev = get_device(device) if not isinstance(device, torch.device) else device
    model.to(dev).train()
    loader = data if isinstance(data, DataLoader) else make_loader(data, cfg.batch_size, shuffle=True, seed=cfg.seed)
    steps_per_epoch = max(1, len(loader))
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return dev, loader, steps_per_epoch, total, opt, sched


def train(model: nn.Module, data: Dataset | DataLoader, config: TrainConfig | None = None,
          teacher: nn.Module | None = None, extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          after_step: Callable[[nn.Module], None] | None = None, progress: ProgressFn | None = None,
          device: str | torch.device | None = "auto") -> nn.Module:
    """Train `model` in place and return it.

    `epochs` may be fractional; `max_steps` caps the optimizer steps (short fine-tunes).
    `teacher` enables distillation with weight `kd_alpha`; `extra_loss(model)` adds a penalty
    (e.g. Network Slimming's L1 on BN gammas); `after_step(model)` runs after each step (e.g.
    re-applying unstructured masks)."""
    cfg = config or TrainConfig()
    dev, loader, steps_per_epoch, total, opt, sched = training_setup(model, data, cfg, device)
    if teacher is not None:
        teacher.to(dev).eval()
    step = 0
    while step < total:
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None and cfg.kd_alpha > 0:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * distillation_loss(logits, t_logits, cfg.kd_temperature)
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
def evaluate(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 256, max_batches: int | None = None,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy in [0, 1] (model left in eval mode, on its own device unless given)."""
    dev = get_device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size)
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        pred = model(x.to(dev)).argmax(1)
        correct += int((pred == y.to(dev)).sum())
        total += len(y)
    return correct / max(1, total)
