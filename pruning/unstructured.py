"""Unstructured pruning: weight masks on convs and linears (the tensors keep their shapes).

- `magnitude_masks`: zero the smallest-|w| weights, per layer or with one global threshold.
- `han_prune`: Learning both Weights and Connections (Han et al., NeurIPS 2015).
- `lottery_ticket`: the Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019), iterative
  magnitude pruning with rewinding, plus the random-reinit control.

Masks are dicts `{parameter name: 0/1 tensor}`; `MaskKeeper` re-applies them after every
optimizer step (`train(..., after_step=keeper)`) so pruned weights stay zero. Sparsity is
always reported from the weights themselves (counted zeros), not from the masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .errors import PruningError
from .train import ProgressFn, TrainConfig, evaluate, train

Masks = dict[str, torch.Tensor]
Scope = Literal["layer", "global"]


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight tensors unstructured pruning masks: every conv's and linear's `weight`."""
    return {
        f"{name}.weight" if name else "weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def _check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise PruningError(f"sparsity {amount} is outside [0, 1)")


def magnitude_masks(model: nn.Module, amount: float, scope: Scope = "layer", masks: Masks | None = None) -> Masks:
    """Masks that remove the `amount` fraction of the still-unmasked weights with the smallest
    magnitude, in each layer (`layer`) or under one threshold over all layers (`global`).
    Existing `masks` stay applied; ties are broken by position so the count is exact."""
    _check_amount(amount)
    weights = prunable_weights(model)
    old = {
        k: (masks[k].bool() if masks and k in masks else torch.ones_like(w, dtype=torch.bool))
        for k, w in weights.items()
    }
    new = {k: m.clone() for k, m in old.items()}
    if scope == "layer":
        for k, w in weights.items():
            alive = old[k].flatten().nonzero().squeeze(1)
            n_cut = round(len(alive) * amount)
            if n_cut:
                order = torch.argsort(w.detach().abs().flatten()[alive].cpu(), stable=True)
                new[k].view(-1)[alive[order[:n_cut]].to(new[k].device)] = False
    elif scope == "global":
        keys = list(weights)
        mags, owners, positions = [], [], []
        for i, k in enumerate(keys):
            alive = old[k].flatten().nonzero().squeeze(1).cpu()
            mags.append(weights[k].detach().abs().flatten().cpu()[alive])
            owners.append(torch.full((len(alive),), i))
            positions.append(alive)
        flat, owner, pos = torch.cat(mags), torch.cat(owners), torch.cat(positions)
        n_cut = round(len(flat) * amount)
        chosen = torch.argsort(flat, stable=True)[:n_cut]
        for i, k in enumerate(keys):
            idx = pos[chosen[owner[chosen] == i]]
            new[k].view(-1)[idx.to(new[k].device)] = False
    else:
        raise PruningError(f"unknown mask scope {scope!r}; choose layer or global")
    return {k: m.to(weights[k].dtype) for k, m in new.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero the masked weights in place."""
    params = dict(model.named_parameters())
    for k, m in masks.items():
        params[k].mul_(m.to(params[k].device, params[k].dtype))
    return model


class MaskKeeper:
    """`after_step` hook for `train`: re-applies the masks after each optimizer step, so
    momentum and weight decay cannot revive pruned weights."""

    def __init__(self, masks: Masks) -> None:
        self.masks = masks

    def __call__(self, model: nn.Module) -> None:
        apply_masks(model, self.masks)


def sparsity(model: nn.Module) -> dict:
    """Real sparsity: the fraction of exactly-zero entries in each prunable weight and overall."""
    layers, zeros, total = {}, 0, 0
    for k, w in prunable_weights(model).items():
        z = int((w.detach() == 0).sum())
        layers[k] = z / w.numel()
        zeros += z
        total += w.numel()
    return {"overall": zeros / max(1, total), "zeros": zeros, "total": total, "layers": layers}


def magnitude_prune(model: nn.Module, amount: float, scope: Scope = "layer") -> Masks:
    """One-shot magnitude pruning in place; returns the masks."""
    masks = magnitude_masks(model, amount, scope)
    apply_masks(model, masks)
    return masks


def round_amounts(target: float, rounds: int) -> list[float]:
    """Per-round fractions of the surviving weights to remove so that `rounds` rounds reach
    `target` sparsity: each keeps (1 - target)^(1/rounds) of what survived."""
    _check_amount(target)
    if rounds < 1:
        raise PruningError("rounds must be at least 1")
    return [1.0 - (1.0 - target) ** (1.0 / rounds)] * rounds


def weight_penalty(kind: Literal["l1", "l2"], strength: float) -> Callable[[nn.Module], torch.Tensor]:
    """An L1 or L2 penalty on the prunable weights, for `train(..., extra_loss=...)`."""
    if kind not in ("l1", "l2"):
        raise PruningError(f"unknown weight penalty {kind!r}; choose l1 or l2")

    def penalty(model: nn.Module) -> torch.Tensor:
        ws = prunable_weights(model).values()
        terms = [w.abs().sum() if kind == "l1" else w.pow(2).sum() for w in ws]
        return strength * torch.stack(terms).sum()

    return penalty


@dataclass
class RoundRecord:
    """What one pruning round produced."""

    round: int
    sparsity: float
    accuracy: float | None = None


@dataclass
class UnstructuredResult:
    """A masked model, its masks and the per-round history."""

    model: nn.Module
    masks: Masks
    history: list[RoundRecord] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _eval(model: nn.Module, data: Dataset | None) -> float | None:
    return evaluate(model, data) if data is not None else None


def han_prune(
    model: nn.Module,
    train_data: Dataset,
    target: float,
    rounds: int = 3,
    scope: Scope = "layer",
    penalty: Literal["l1", "l2"] = "l2",
    strength: float = 1e-5,
    train_config: TrainConfig | None = None,
    retrain_config: TrainConfig | None = None,
    eval_data: Dataset | None = None,
    progress: ProgressFn | None = None,
) -> UnstructuredResult:
    """Learning both Weights and Connections (Han et al. 2015): train with an L1/L2 weight
    penalty, cut the weights below a magnitude threshold, retrain the survivors with the mask
    held; repeated over `rounds` to reach `target` sparsity. Pass `train_config=None` to start
    from already trained weights (the first, penalised training is then skipped).

    Simplification: the paper sets each layer's threshold as a quality factor times the
    layer's weight std; we pick the threshold that removes the round's fraction (per layer
    or global), which reaches an exact target sparsity."""
    history: list[RoundRecord] = []
    extra = weight_penalty(penalty, strength)
    if train_config is not None:
        train(model, train_data, train_config, extra_loss=extra)
    retrain_cfg = retrain_config or TrainConfig(epochs=2, lr=0.01)
    masks: Masks | None = None
    for r, amount in enumerate(round_amounts(target, rounds), start=1):
        masks = magnitude_masks(model, amount, scope, masks)
        apply_masks(model, masks)
        train(model, train_data, retrain_cfg, extra_loss=extra, after_step=MaskKeeper(masks))
        history.append(RoundRecord(r, sparsity(model)["overall"], _eval(model, eval_data)))
        if progress is not None:
            progress(r / rounds, {"round": r, "sparsity": history[-1].sparsity, "accuracy": history[-1].accuracy})
    return UnstructuredResult(model, masks or {}, history)


class _Snapshot:
    """`after_step` hook that copies the weights after optimizer step `at` (late rewinding)."""

    def __init__(self, at: int, inner: Callable[[nn.Module], None] | None = None) -> None:
        self.at, self.inner, self.step = at, inner, 0
        self.state: dict[str, Any] | None = None

    def __call__(self, model: nn.Module) -> None:
        if self.inner is not None:
            self.inner(model)
        self.step += 1
        if self.step == self.at:
            self.state = copy.deepcopy(model.state_dict())


def _rewind(model: nn.Module, state: dict, masks: Masks) -> None:
    model.load_state_dict(state)
    apply_masks(model, masks)


def lottery_ticket(
    model: nn.Module,
    train_data: Dataset,
    target: float,
    rounds: int = 3,
    train_config: TrainConfig | None = None,
    scope: Scope = "layer",
    rewind_step: int = 0,
    reinit_model: nn.Module | None = None,
    eval_data: Dataset | None = None,
    progress: ProgressFn | None = None,
) -> UnstructuredResult:
    """The Lottery Ticket procedure (Frankle & Carbin 2019) on a freshly initialised `model`:
    train; remove the smallest-magnitude (1 - (1-target)^(1/rounds)) of the surviving weights;
    rewind the survivors to their initial values (or, with `rewind_step` k > 0, to their
    values after k optimizer steps of the first training, Frankle et al. 2019's late
    rewinding); retrain; `rounds` rounds in all, the last retraining giving the ticket.
    With `reinit_model` (the same architecture freshly initialised with another seed), the
    final mask is also trained from that random initialisation (the paper's control); its
    model and accuracy are in `extra`. `model` ends as the trained ticket; the untrained
    ticket itself (final mask applied to the rewound weights) is `extra["ticket_state"]`.

    BN and biases are never masked (as in the paper); `history[0]` is the dense network.
    Simplification: the classifier is pruned at the same rate as the rest (the paper uses
    half the rate for the output layer)."""
    cfg = train_config or TrainConfig(epochs=10)
    amounts = round_amounts(target, rounds)
    init_state = copy.deepcopy(model.state_dict())
    snap = _Snapshot(rewind_step) if rewind_step > 0 else None
    train(model, train_data, cfg, after_step=snap)
    if snap is None:
        rewind_state = init_state
    elif snap.state is None:
        raise PruningError(f"rewind step {rewind_step} is beyond the training run's steps")
    else:
        rewind_state = snap.state
    history = [RoundRecord(0, sparsity(model)["overall"], _eval(model, eval_data))]
    extra: dict = {"dense_accuracy": history[0].accuracy}
    masks: Masks | None = None
    total = rounds + int(reinit_model is not None)
    for r, amount in enumerate(amounts, start=1):
        masks = magnitude_masks(model, amount, scope, masks)
        _rewind(model, rewind_state, masks)
        train(model, train_data, cfg, after_step=MaskKeeper(masks))
        history.append(RoundRecord(r, sparsity(model)["overall"], _eval(model, eval_data)))
        if progress is not None:
            progress(r / total, {"round": r, "sparsity": history[-1].sparsity, "accuracy": history[-1].accuracy})
    assert masks is not None  # round_amounts gives at least one round
    ticket = copy.deepcopy(rewind_state)
    for k, m in masks.items():
        ticket[k] = ticket[k] * m.to(ticket[k].device, ticket[k].dtype)
    extra["ticket_state"] = ticket
    if reinit_model is not None:
        control = reinit_model
        apply_masks(control, masks)
        train(control, train_data, cfg, after_step=MaskKeeper(masks))
        extra["reinit_model"] = control
        extra["reinit_accuracy"] = _eval(control, eval_data)
        if progress is not None:
            progress(1.0, {"round": "reinit", "accuracy": extra["reinit_accuracy"]})
    return UnstructuredResult(model, masks, history, extra)
