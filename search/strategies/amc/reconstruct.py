"""AMC's channel-pruning step (He et al., ECCV 2018, after He et al., ICCV 2017): cut the
channels the job's criterion ranks lowest, then recover each layer that reads a cut group by
least squares, so the pruned network reproduces the original's outputs without fine-tuning.

For every conv/linear whose input channels shrank, in model order: sample `n_points` output
positions per calibration image, take the layer's input patches in the *pruned* network (so
earlier reconstructions are accounted for) and the *original* layer's outputs on the kept
output channels, and solve `min ||Y - X W||^2 (+ ridge)` for the new weights.

Simplifications: channels are chosen per group by the job's criterion (AMC ranks a layer's
input channels by weight magnitude; groups coupled by residual adds need one choice for all
members); depthwise convs are left as cut (they mix no channels); a layer is reconstructed only
when the samples outnumber its unknowns, otherwise it keeps its cut weights."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pruning.criteria import Criterion, get_criterion
from pruning.cut import cut_groups, example_input, group_scores, prepare_criterion, resolve_policy
from pruning.graph import ChannelGroup, DependencyGraph

from ...base import SearchError

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


class _Stop(Exception):
    """Raised by a hook to end a forward once the wanted layer's input is seen."""


def cut_with_indices(
    model: nn.Module,
    policy: Mapping[str, float],
    criterion: str | Criterion,
    input_shape: Sequence[int],
    calibration: Batches | None = None,
    round_to: int = 1,
) -> tuple[nn.Module, dict[str, list[int]], list[ChannelGroup]]:
    """A pruned copy of `model` (as `pruning.cut.prune` makes it), per group the indices of
    the original channels it kept, and the original's groups."""
    target = copy.deepcopy(model)
    graph = DependencyGraph(target, example_input(target, input_shape))
    keep = resolve_policy(graph, policy, round_to)
    crit = get_criterion(criterion)
    prepare_criterion(crit, target, graph, calibration)
    kept = cut_groups(graph, keep, group_scores(target, graph, crit))
    return target, kept, graph.groups


def _capture(model: nn.Module, name: str, x: torch.Tensor, want: str) -> torch.Tensor:
    """The input (`want="input"`) or output of module `name` for batch `x`."""
    module = dict(model.named_modules())[name]
    box: list[torch.Tensor] = []

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        box.append((inputs[0] if want == "input" else output).detach())
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box[0]


def _samples(
    layer: nn.Conv2d | nn.Linear, x: torch.Tensor, y: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (input patch, output vector) at the sampled output positions of each image."""
    if isinstance(layer, nn.Linear):
        return x.flatten(1), y.flatten(1)
    if isinstance(layer.padding, str):
        raise SearchError(f"reconstruct: a conv with padding={layer.padding!r} is not supported")
    patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # N, C*k*k, L
    n = x.shape[0]
    idx = positions[:n]
    rows = torch.arange(n)[:, None]
    xs = patches.transpose(1, 2)[rows, idx].reshape(-1, patches.shape[1])
    ys = y.flatten(2).transpose(1, 2)[rows, idx].reshape(-1, y.shape[1])
    return xs, ys


@dataclass
class LayerFit:
    """How far one layer's output is from the original's, before and after least squares
    (relative squared error on the calibration samples)."""

    name: str
    error_before: float
    error_after: float
    solved: bool


def _solve(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Ridge-regularised least squares `argmin_W ||y - x W||^2 + ridge*mean(diag) ||W||^2`."""
    gram = x.T @ x
    reg = ridge * gram.diagonal().mean().clamp_min(1e-12)
    return torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ y)


@torch.no_grad()
def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    kept: dict[str, list[int]],
    out_group: dict[str, str],
    in_group: dict[str, str],
    calibration: Batches,
    n_points: int = 10,
    ridge: float = 1e-4,
    seed: int = 0,
) -> list[LayerFit]:
    """Refit, in place and in model order, every non-depthwise conv/linear of `pruned` whose
    input group lost channels, to the original layer's outputs on its kept output channels.
    `out_group`/`in_group` map layer names to the groups owning their output/input channels."""
    original.eval()
    pruned.eval()
    device = next(pruned.parameters()).device
    xs = torch.cat([x for x, _ in calibration]).to(device)
    modules = dict(pruned.named_modules())
    orig_modules = dict(original.named_modules())
    gen = torch.Generator().manual_seed(seed)
    fits = []
    for name, layer in modules.items():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or name not in in_group:
            continue
        full_in = orig_modules[name].in_channels if isinstance(layer, nn.Conv2d) else orig_modules[name].in_features
        cur_in = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
        if cur_in == full_in or (isinstance(layer, nn.Conv2d) and layer.groups > 1):
            continue
        y_full = _capture(original, name, xs, "output")
        g_out = out_group.get(name)
        y = y_full[:, kept[g_out]] if g_out is not None else y_full
        x = _capture(pruned, name, xs, "input")
        n_pos = y.shape[2] * y.shape[3] if y.dim() == 4 else 1
        positions = torch.stack(
            [torch.randperm(n_pos, generator=gen)[: min(n_points, n_pos)] for _ in range(len(xs))]
        ).to(device)
        x_rows, y_rows = _samples(layer, x, y, positions)
        bias = layer.bias
        if bias is not None:
            x_rows = torch.cat([x_rows, torch.ones(len(x_rows), 1, device=device)], 1)
        w_now = layer.weight.flatten(1).T
        if bias is not None:
            w_now = torch.cat([w_now, bias[None]], 0)
        scale = y_rows.pow(2).sum().clamp_min(1e-12)
        before = float((y_rows - x_rows @ w_now).pow(2).sum() / scale)
        solved = len(x_rows) >= x_rows.shape[1]
        after = before
        if solved:
            w = _solve(x_rows.double(), y_rows.double(), ridge).float()
            after = float((y_rows - x_rows @ w).pow(2).sum() / scale)
            if after < before:
                if bias is not None:
                    bias.copy_(w[-1])
                    w = w[:-1]
                layer.weight.copy_(w.T.reshape(layer.weight.shape))
            else:
                after = before
        fits.append(LayerFit(name, before, after, solved))
    return fits


def prune_and_reconstruct(
    model: nn.Module,
    policy: Mapping[str, float],
    criterion: str | Criterion,
    input_shape: Sequence[int],
    calibration: Batches,
    n_points: int = 10,
    ridge: float = 1e-4,
    round_to: int = 1,
    seed: int = 0,
) -> tuple[nn.Module, list[LayerFit]]:
    """Cut `model` by `policy` (channels chosen by `criterion`) and least-squares-reconstruct it."""
    pruned, kept, groups = cut_with_indices(model, policy, criterion, input_shape, calibration, round_to)
    return pruned, reconstruct_groups(model, pruned, kept, groups, calibration, n_points, ridge, seed)


def reconstruct_groups(
    original: nn.Module,
    pruned: nn.Module,
    kept: dict[str, list[int]],
    groups: Sequence[ChannelGroup],
    calibration: Batches,
    n_points: int = 10,
    ridge: float = 1e-4,
    seed: int = 0,
) -> list[LayerFit]:
    """`reconstruct` a cut network whose `groups` kept the original channels `kept`."""
    out_group = {m: g.key for g in groups for m in g.members}
    in_group = {c: g.key for g in groups for c in g.consumers}
    return reconstruct(original, pruned, kept, out_group, in_group, calibration, n_points, ridge, seed)
