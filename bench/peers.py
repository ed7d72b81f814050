"""The peer methods the benchmark tables compare against, each called the way its library
documents it, then bisected onto the same FLOPs budget as Secateurs' strategies:

- `torch_pruning_global`: Torch-Pruning's one-line call, global magnitude (`MetaPruner` with
  `GroupMagnitudeImportance(p=1)`, `global_pruning=True`);
- `torch_pruning_group_norm`: Torch-Pruning's `GroupNormPruner` (Fang et al., DepGraph, CVPR
  2023): group-level sparsity training (`update_regularizer` + `regularize` after each backward)
  for `sparsity_steps` steps, then the global group-norm cut;
- `modelopt_fastnas`: NVIDIA ModelOpt's FastNAS (`mtp.prune(mode="fastnas")`: a per-layer
  sensitivity map from a score function, then a binary search onto the constraint). An
  optional benchmark extra (`nvidia-modelopt` 0.47 with `requests`, `huggingface_hub`,
  `torchprofile==0.0.4`, `omegaconf`, `pulp`, `rich`, `regex` beside the CPU torch); its
  default channel divisor of 32 cannot reach a 50% target on 16-channel CIFAR-style layers, so
  the benchmark passes `channel_divisor` (default 4).

The benchmark fine-tunes each returned network with the same budget as every other row. A peer
library that is not importable stops the run with a message naming it (`bench.common.peer_module`).
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench.common import peer_module
from pruning.data import DataSplits
from pruning.graph import output_layer
from pruning.measure import count_flops
from pruning.train import evaluate
from search.base import SearchError

TORCH_PRUNING = "it is a dependency of the project: reinstall the environment (make install)"
MODELOPT = "install it with scripts/install-peers.sh and run with PYTHONPATH=.:.peers"


def _bisect(cut: Callable[[float], nn.Module], shape: tuple[int, ...], budget: float, steps: int = 14) -> nn.Module:
    """The least-pruned network `cut(ratio)` gives within `budget` FLOPs (ratio bisected). A
    method whose FLOPs do not fall with the ratio all the way up (Torch-Pruning's global ranking
    under its per-layer cap gives more FLOPs at 0.98 than at 0.9 on a detector) can leave the
    bisection with nothing; then the ratio is scanned in steps of 0.05 and bisected between the
    last one over the budget and the first one within it."""

    def narrow(lo: float, hi: float, best: nn.Module | None, steps: int) -> nn.Module | None:
        for _ in range(steps):
            mid = (lo + hi) / 2
            m = cut(mid)
            if count_flops(m, shape) <= budget:
                hi, best = mid, m
            else:
                lo = mid
        return best

    best = narrow(0.0, 0.99, None, steps)
    if best is not None:
        return best
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    for below, ratio in zip([0.0, *grid], grid, strict=False):
        m = cut(ratio)
        if count_flops(m, shape) <= budget:
            return narrow(below, ratio, m, steps // 2)
    raise SearchError("the peer method could not reach the budget")


Ignore = Callable[[nn.Module, torch.Tensor], list[nn.Module]]
"""`ignore(model, example)`: the layers a Torch-Pruning cut must leave whole."""


def torch_pruning_global_cut(
    model: nn.Module, shape: tuple[int, ...], ratio: float, max_rate: float, ignore: Ignore | None = None
) -> nn.Module:
    """A copy of `model` cut by Torch-Pruning's global magnitude pruning at channel ratio
    `ratio` (at most `max_rate` of a layer), the layers `ignore` names left whole (default:
    the classifier, as its examples do)."""
    tp = peer_module("torch_pruning", TORCH_PRUNING)
    m = copy.deepcopy(model).eval()
    example = torch.zeros(1, *shape, device=next(m.parameters()).device)
    pruner = tp.pruner.MetaPruner(
        m,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        global_pruning=True,
        pruning_ratio=ratio,
        max_pruning_ratio=max_rate,
        ignored_layers=ignore(m, example) if ignore else [output_layer(m)],
    )
    pruner.step()
    return m


def torch_pruning_global(
    model: nn.Module, shape: tuple[int, ...], budget: float, max_rate: float, ignore: Ignore | None = None
) -> nn.Module:
    """Torch-Pruning's global magnitude pruning (`torch_pruning_global_cut`), its channel ratio
    bisected to the FLOPs budget. `ignore` as there (a detector's output convs, as its YOLOv8
    example leaves the Detect head)."""
    return _bisect(lambda ratio: torch_pruning_global_cut(model, shape, ratio, max_rate, ignore), shape, budget)


class _C2fSplit(nn.Module):
    """A C2f block whose first 1x1 conv is two convs, one per half, instead of one conv whose
    output is chunked: the same function (its weights are the halves of the original's), in
    the form Torch-Pruning's YOLOv8 example rewrites C2f into (`C2f_v2`) before pruning, since
    its dependency graph cannot index a chunk of a pruned conv."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        c = block.cv1.conv.out_channels // 2
        self.cv0, self.cv1 = copy.deepcopy(block.cv1), copy.deepcopy(block.cv1)
        for part, keep in ((self.cv0, slice(0, c)), (self.cv1, slice(c, 2 * c))):
            conv, bn = part.conv, part.bn
            conv.weight = nn.Parameter(conv.weight.detach()[keep].clone())
            conv.out_channels = c
            bn.weight = nn.Parameter(bn.weight.detach()[keep].clone())
            bn.bias = nn.Parameter(bn.bias.detach()[keep].clone())
            bn.running_mean = bn.running_mean[keep].clone()
            bn.running_var = bn.running_var[keep].clone()
            bn.num_features = c
        self.m, self.cv2 = block.m, block.cv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


def split_c2f(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A copy of a zoo YOLO detector (`pruning.models.yolo`) with every C2f block in
    `_C2fSplit` form: what Torch-Pruning's YOLOv8 example prunes (same outputs, checked)."""
    from pruning.models.yolo import C2f

    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, C2f):
                setattr(module, child_name, _C2fSplit(child))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model.eval()(x), atol=1e-4, rtol=1e-4)
    return out


def torch_pruning_group_norm(
    model: nn.Module,
    data: DataSplits,
    shape: tuple[int, ...],
    budget: float,
    max_rate: float,
    sparsity_steps: int,
    reg: float = 5e-4,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Torch-Pruning's GroupNormPruner: `sparsity_steps` steps of SGD with its group-norm
    regulariser (the DepGraph paper's sparse training), then the global cut bisected onto the
    budget from the sparsified weights. The sparse training's steps count against the row's
    fine-tune budget in the benchmark."""
    tp = peer_module("torch_pruning", TORCH_PRUNING)

    device = next(model.parameters()).device
    sparse = copy.deepcopy(model).train()
    example = torch.zeros(1, *shape, device=device)

    def pruner_for(m: nn.Module, ratio: float) -> tp.pruner.GroupNormPruner:
        return tp.pruner.GroupNormPruner(
            m,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=True,
            pruning_ratio=ratio,
            max_pruning_ratio=max_rate,
            reg=reg,
            ignored_layers=[output_layer(m)],
        )

    trainer = pruner_for(sparse, 0.5)
    opt = torch.optim.SGD(sparse.parameters(), lr=lr, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    trainer.update_regularizer()
    for _, (xb, yb) in zip(range(sparsity_steps), batches, strict=False):
        opt.zero_grad()
        nn.functional.cross_entropy(sparse(xb.to(device)), yb.to(device)).backward()
        trainer.regularize(sparse)
        opt.step()
    sparse.eval()

    def cut(ratio: float) -> nn.Module:
        m = copy.deepcopy(sparse).eval()
        pruner_for(m, ratio).step()
        return m

    return _bisect(cut, shape, budget)


def modelopt_fastnas(
    model: nn.Module,
    data: DataSplits,
    shape: tuple[int, ...],
    flops_ratio: float,
    channel_divisor: int = 4,
    score_batches: int = 4,
    batch_size: int = 256,
    calib_batches: int = 4,
) -> nn.Module:
    """ModelOpt's FastNAS to `flops_ratio` of the original FLOPs, scored by validation accuracy
    on `score_batches` batches (ModelOpt's documented score function: validation accuracy),
    BN re-estimated on the same number of images as Secateurs' adaptive BN (`calib_batches` x 64)."""
    peer_module("modelopt", MODELOPT)
    import modelopt.torch.opt as mto
    import modelopt.torch.prune as mtp
    from modelopt.torch.prune.fastnas import FastNASConfig

    device = next(model.parameters()).device
    m = copy.deepcopy(model).eval()
    rules = FastNASConfig().model_dump()
    for key, rule in rules.items():
        for r in rule.values() if isinstance(rule, dict) else []:
            if isinstance(r, dict) and "channel_divisor" in r:
                r["channel_divisor"] = channel_divisor
            if isinstance(r, dict) and "feature_divisor" in r:
                r["feature_divisor"] = channel_divisor
        rules[key] = rule
    # FastNAS re-estimates a sub-net's BN only once its queue holds 50 batches (with fewer it
    # scores with stale statistics and warns), so the same 4 x 64 images adaptive BN uses go
    # in 50 small batches
    queue_len = 50
    loader = torch.utils.data.DataLoader(data.train, batch_size=max(1, calib_batches * 64 // queue_len), shuffle=True)

    def score(net: nn.Module) -> float:
        return evaluate(net, data.val, batch_size=batch_size, max_batches=score_batches)

    with tempfile.TemporaryDirectory() as tmp:
        pruned, _ = mtp.prune(
            m,
            mode=[("fastnas", rules)],
            constraints={"flops": f"{flops_ratio * 100:.1f}%"},
            dummy_input=torch.zeros(1, *shape, device=device),
            config={
                "data_loader": loader,
                "score_func": score,
                # (its default, the whole loader of 64-image batches, took 18 minutes for the
                # 264 sub-nets of resnet56)
                "max_iter_data_loader": queue_len,
                "checkpoint": str(Path(tmp) / "fastnas.pth"),
                "verbose": False,
            },
        )
    return mto.export(pruned) if hasattr(mto, "export") else pruned
