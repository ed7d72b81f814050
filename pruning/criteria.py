"""Filter importance criteria: a score per output channel of a channel group, higher = keep.

Each criterion scores the channels of every member layer of a group and averages over the
members, so channels coupled through a residual add are judged together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PruningError
from .graph import ChannelGroup, DependencyGraph
from .registry import Registry


def filters(module: nn.Module) -> torch.Tensor:
    """A layer's weights as one row per output channel (a transposed conv keeps its output
    channels in the weight's second dimension)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise PruningError(f"{type(module).__name__} has no weight tensor")
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        weight = weight.transpose(0, 1)
    return weight.detach().flatten(1)


class Criterion:
    """Base class: `prepare` sees calibration batches (data-dependent criteria collect
    statistics there), `scores` returns one importance value per channel of a group."""

    name: str = ""
    needs_data: bool = False

    def prepare(
        self, model: nn.Module, graph: DependencyGraph, batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> None:
        """Collect whatever the criterion needs before scoring; data-free criteria do nothing."""

    def scores(self, model: nn.Module, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        """Importance of each of the group's channels (shape `[group.channels]`)."""
        modules = dict(model.named_modules())
        per_member = [self.layer_scores(modules[m]) for m in group.members]
        return torch.stack([s.float() for s in per_member]).mean(0)

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        """Importance of one layer's output channels, for weight-based criteria."""
        raise NotImplementedError

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of one group made comparable with other groups' for a global threshold."""
        return normalise(scores)


CRITERIA: Registry[Callable[[], Criterion]] = Registry("criterion", sort=True)
"""Criteria by name; each built-in is registered where it is defined, below."""

register_criterion = CRITERIA.register
"""Make a criterion available by name: `@register_criterion("name")` on a class, or
`register_criterion("name", factory)`."""


@register_criterion("l1")
class L1Norm(Criterion):
    """L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets", 2016)."""

    name = "l1"

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        return filters(module).abs().sum(1)


@register_criterion("l2")
class L2Norm(Criterion):
    """L2 norm of each filter (Li et al. 2016 compare it with L1; the two barely differ)."""

    name = "l2"

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        return filters(module).norm(p=2, dim=1)


@register_criterion("fpgm")
class FPGM(Criterion):
    """Filter Pruning via Geometric Median (He et al., CVPR 2019): a filter close to the
    geometric median of its layer is redundant, since the others can stand in for it. As in
    the paper's implementation, importance is the sum of Euclidean distances to the layer's
    other filters; the smallest (e.g. one of two identical filters) is cut first."""

    name = "fpgm"

    def layer_scores(self, module: nn.Module) -> torch.Tensor:
        w = filters(module).float()
        return torch.cdist(w, w, p=2).sum(1)


@register_criterion("slimming")
class BNScale(Criterion):
    """Network Slimming (Liu et al., ICCV 2017): |gamma| of the BatchNorm scaling each channel,
    averaged over the group's BNs; train with `slimming_penalty` to make gammas sparse.

    As in the paper, a global threshold compares raw |gamma| across layers (no per-group
    normalisation). A group without BN (e.g. a linear layer) falls back to its filters' L1
    norms rescaled to the model's mean |gamma| (our addition, the paper does not cut those)."""

    name = "slimming"

    def __init__(self) -> None:
        self._mean_gamma = 1.0

    def prepare(
        self, model: nn.Module, graph: DependencyGraph, batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> None:
        gammas = [
            m.weight.detach().abs().flatten()
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        ]
        self._mean_gamma = float(torch.cat(gammas).mean()) if gammas else 1.0

    def scores(self, model: nn.Module, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        modules = dict(model.named_modules())
        bns = [modules[b] for b in group.bns if getattr(modules[b], "weight", None) is not None]
        if bns:
            return torch.stack([bn.weight.detach().abs().float() for bn in bns]).mean(0)
        l1 = torch.stack([filters(modules[m]).abs().sum(1).float() for m in group.members]).mean(0)
        return l1 / l1.mean().clamp_min(1e-12) * self._mean_gamma

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


def slimming_penalty(strength: float = 1e-4) -> Callable[[nn.Module], torch.Tensor]:
    """Network Slimming's sparsity term, `strength * sum |gamma|` over every BN, for
    `train(..., extra_loss=...)` (the paper uses 1e-4 to 1e-5); autograd gives the paper's
    subgradient `strength * sign(gamma)`."""

    def penalty(model: nn.Module) -> torch.Tensor:
        terms = [
            m.weight.abs().sum()
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        ]
        if not terms:
            return torch.zeros(())
        return strength * torch.stack(terms).sum()

    return penalty


class ActivationCriterion(Criterion):
    """Base of the data-dependent criteria: `prepare` runs the calibration batches with forward
    hooks on the BN after each member layer (the layer itself where there is none), applies
    ReLU to that output, as the survey prescribes, and accumulates per-channel statistics.

    Simplification: ReLU is applied at every tap, also where the network itself adds a
    residual before its ReLU or has no ReLU (MobileNetV2's linear bottlenecks)."""

    needs_data = True

    def __init__(self) -> None:
        self._stats: dict[str, torch.Tensor] = {}

    def tap(self, graph: DependencyGraph, member: str) -> str:
        """Name of the module whose output stands for a member's channels."""
        return graph.following_bn(member) or member

    def accumulate(self, acc: dict[str, torch.Tensor], act: torch.Tensor) -> None:
        """Fold one batch of post-ReLU activations, shaped [N, C, H, W], into `acc`."""
        raise NotImplementedError

    def finish(self, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-channel importance from the accumulated statistics."""
        raise NotImplementedError

    def prepare(
        self, model: nn.Module, graph: DependencyGraph, batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> None:
        modules = dict(model.named_modules())
        taps = {self.tap(graph, m) for g in graph.groups for m in g.members}
        accs: dict[str, dict[str, torch.Tensor]] = {t: {} for t in taps}

        def make_hook(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                act = F.relu(output.detach().float())
                if act.dim() == 2:
                    act = act[:, :, None, None]
                self.accumulate(accs[name], act.cpu())

            return hook

        handles = [modules[t].register_forward_hook(make_hook(t)) for t in taps]
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for x, _ in batches or []:
                    model(x.to(device))
        finally:
            for h in handles:
                h.remove()
        missing = [t for t, a in accs.items() if not a]
        if missing:
            raise PruningError(f"criterion {self.name!r} saw no activations at {', '.join(sorted(missing))}")
        self._stats = {t: self.finish(a) for t, a in accs.items()}

    def scores(self, model: nn.Module, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        if not self._stats:
            raise PruningError(f"criterion {self.name!r} needs calibration batches (prepare was not run)")
        return torch.stack([self._stats[self.tap(graph, m)] for m in group.members]).mean(0)


def _add(acc: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    acc[key] = acc[key] + value if key in acc else value


@register_criterion("apoz")
class APoZ(ActivationCriterion):
    """Network Trimming (Hu et al. 2016): the Average Percentage of Zeros of a channel's
    activations after BN and ReLU; importance is 1 - APoZ, so an always-zero channel scores 0."""

    name = "apoz"

    def accumulate(self, acc: dict[str, torch.Tensor], act: torch.Tensor) -> None:
        _add(acc, "zeros", (act == 0).sum((0, 2, 3)).double())
        _add(acc, "count", torch.tensor(float(act[:, 0].numel()), dtype=torch.double))

    def finish(self, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        return (1.0 - acc["zeros"] / acc["count"]).float()


@register_criterion("activation-mean")
class ActivationMean(ActivationCriterion):
    """Mean activation of a channel after BN+ReLU over calibration data (Molchanov et al. 2016,
    their "mean activation" baseline): channels that barely fire contribute little."""

    name = "activation-mean"

    def accumulate(self, acc: dict[str, torch.Tensor], act: torch.Tensor) -> None:
        _add(acc, "sum", act.double().sum((0, 2, 3)))
        _add(acc, "count", torch.tensor(float(act[:, 0].numel()), dtype=torch.double))

    def finish(self, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        return (acc["sum"] / acc["count"]).float()


@register_criterion("activation-std")
class ActivationStd(ActivationMean):
    """Standard deviation of a channel's activations after BN+ReLU over calibration data
    (Molchanov et al. 2016, their "activation std" baseline): a channel whose output hardly
    varies carries little information (a constant can be folded into the next layer's bias)."""

    name = "activation-std"

    def accumulate(self, acc: dict[str, torch.Tensor], act: torch.Tensor) -> None:
        super().accumulate(acc, act)
        _add(acc, "sumsq", act.double().pow(2).sum((0, 2, 3)))

    def finish(self, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        mean = acc["sum"] / acc["count"]
        var = (acc["sumsq"] / acc["count"] - mean.pow(2)).clamp_min(0.0)
        return var.sqrt().float()


@register_criterion("hrank")
class HRank(ActivationCriterion):
    """HRank (Lin et al., CVPR 2020): the average rank of a channel's feature maps (each an
    H x W matrix) over calibration images; low-rank maps carry less information. Ranks are
    taken after BN+ReLU on at most `max_images` images (the paper uses 500; we cap for speed).
    A linear layer's 1x1 "maps" have rank 1 where non-zero."""

    name = "hrank"

    def __init__(self, max_images: int = 128) -> None:
        super().__init__()
        self.max_images = max_images

    def prepare(
        self, model: nn.Module, graph: DependencyGraph, batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> None:
        kept, seen = [], 0
        for x, y in batches or []:
            if seen >= self.max_images:
                break
            kept.append((x[: self.max_images - seen], y[: self.max_images - seen]))
            seen += len(kept[-1][0])
        super().prepare(model, graph, kept)

    def accumulate(self, acc: dict[str, torch.Tensor], act: torch.Tensor) -> None:
        n = act.shape[0]
        if act.shape[2] * act.shape[3] == 1:
            ranks = (act.flatten(2).abs().sum(2) > 0).double().sum(0)
        else:
            ranks = torch.linalg.matrix_rank(act).double().sum(0)
        _add(acc, "rank", ranks)
        _add(acc, "count", torch.tensor(float(n), dtype=torch.double))

    def finish(self, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        return (acc["rank"] / acc["count"]).float()


@register_criterion("first-k")
class FirstK(Criterion):
    """Index order: channel i scores higher than channel j > i, so a cut keeps the first k
    channels, which is what a slimmable network's width k runs (`pruning.slimmable`)."""

    name = "first-k"

    def scores(self, model: nn.Module, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        return torch.arange(group.channels, 0, -1, dtype=torch.float32)


def get_criterion(name: str | Criterion) -> Criterion:
    """A criterion instance by name (or the instance itself)."""
    if isinstance(name, Criterion):
        return name
    return CRITERIA.get(name)()


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Scale a group's scores to mean 1 so one global threshold compares groups of
    different layers (as Torch-Pruning's group normalisation does)."""
    return scores / scores.mean().clamp_min(1e-12)
