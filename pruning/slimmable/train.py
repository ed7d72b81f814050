"""Training a slimmable network so that every width works with the same weights.

- Slimmable (Yu et al. 2018): each batch is forwarded at every width of the list; each
  width's loss is backpropagated, the gradients accumulate, and only then the optimiser steps.
- Universally slimmable (Yu & Huang 2019): the sandwich rule (the largest width, the smallest
  and `num_random` random ones per step) with inplace distillation: the largest learns from
  the labels, the others from its soft predictions (detached).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..train import ProgressFn, TrainConfig, evaluate, training_setup
from .network import Config, SlimmableNet, calibrate_bn


@dataclass
class SlimTrainConfig(TrainConfig):
    """`TrainConfig` plus the universal-training settings: random widths per step (sandwich
    rule), whether they are drawn per channel group, and inplace distillation."""

    num_random: int = 2
    per_layer: bool = True
    inplace_distillation: bool = True


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the (detached) soft predictions of the largest width, as
    US-Nets' inplace distillation uses (no temperature)."""
    return -(F.softmax(target_logits.detach(), 1) * F.log_softmax(logits, 1)).sum(1).mean()


def step_configs(model: SlimmableNet, cfg: SlimTrainConfig, rng: random.Random) -> list[Config]:
    """The configurations one training step visits, largest first: every width of a
    switchable-BN network, or the sandwich (largest, smallest, `num_random` random) of a
    universal one."""
    if not model.universal:
        return [model.config_for_width(w) for w in reversed(model.widths)]
    configs = [model.config_for_width(model.max_width), model.config_for_width(model.min_width)]
    configs += [model.random_config(rng, cfg.per_layer) for _ in range(cfg.num_random)]
    return configs


def accumulate_gradients(
    model: SlimmableNet, x: torch.Tensor, y: torch.Tensor, configs: list[Config], distill: bool
) -> list[float]:
    """Forward and backpropagate the batch at each configuration in turn (gradients add up
    in `.grad`); with `distill`, every configuration after the first learns from the first's
    soft predictions. Each loss is scaled by 1/len(configs), so the accumulated gradient is
    their mean and a learning rate that suits plain training suits this too (the papers sum;
    that is the same up to the learning rate). Returns each configuration's (unscaled) loss
    and leaves the model at the first configuration."""
    scale = 1.0 / len(configs)
    losses: list[float] = []
    teacher: torch.Tensor | None = None  # the first (largest) configuration's predictions
    for config in configs:
        model.set_config(config)
        logits = model(x)
        if teacher is None or not distill:
            loss = F.cross_entropy(logits, y)
            if teacher is None:
                teacher = logits.detach()
        else:
            loss = soft_cross_entropy(logits, teacher)
        (loss * scale).backward()
        losses.append(float(loss.detach()))
    model.set_config(configs[0])
    return losses


def train_slimmable(
    model: SlimmableNet,
    data: Dataset | DataLoader,
    config: SlimTrainConfig,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = "auto",
) -> SlimmableNet:
    """Train all widths of `model` at once for `config.epochs` (SGD, cosine schedule, as
    `pruning.train.train`); one optimiser step per batch after the gradients of every width
    have accumulated."""
    cfg = config
    dev, loader, steps_per_epoch, total, opt, sched = training_setup(model, data, cfg, device)
    rng = random.Random(cfg.seed)
    distill = model.universal and cfg.inplace_distillation
    step = 0
    while step < total:
        for xb, yb in loader:
            x, y = xb.to(dev), yb.to(dev)
            opt.zero_grad(set_to_none=True)
            losses = accumulate_gradients(model, x, y, step_configs(model, cfg, rng), distill)
            opt.step()
            sched.step()
            step += 1
            if progress is not None and (step % steps_per_epoch == 0 or step == total):
                progress(
                    step / total,
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "loss": losses[0],
                        "loss_smallest": losses[-1 if not model.universal else 1],
                    },
                )
            if step >= total:
                break
    return model.eval()


def evaluate_config(
    model: SlimmableNet,
    data: Dataset | DataLoader,
    config: Mapping[str, int] | float,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy at one width or configuration; a universal network's BN statistics are
    calibrated on `calibration` first (when given)."""
    if isinstance(config, Mapping):
        model.set_config(config)
    else:
        model.set_width(float(config))
    if calibration is not None and model.universal:
        calibrate_bn(model, calibration)
    return evaluate(model, data, max_batches=max_batches)
