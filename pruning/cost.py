"""The exact cost model: FLOPs, parameters and peak memory of the network a kept-channel vector
gives, without cutting it.

`trace(model, input_shape)` traces the channel-dependency graph once and, in the same forward,
records the shape of every tensor a leaf module reads or writes. Torch-Pruning's pruning group of
each channel group says, for every layer dimension and every intermediate tensor, how many of its
entries one channel of the group removes (1 for a conv or a BN, h*w for a linear after a flatten,
1 per concatenated input). Every size of the cut network is then affine in the channels removed
per group, and every count is a sum of products of such sizes:

- MACs (as `pruning.measure.count_flops` counts them): a conv call is `prod(weight shape)` times
  its output positions (input positions when transposed), a linear call `tokens * in * out`;
- parameters (as `count_params`): each conv/linear/norm layer's parameters from its cut dims;
- peak memory (as `peak_memory_bytes`): weights and buffers in bytes plus, over every leaf call,
  the largest sum of its input and output tensors' bytes.

A query is a few small integer matrix products (microseconds; no copy, no forward). The model
checks itself once against the counters on the full network; a model with a layer it cannot
follow (a parametrised layer type it does not know in a pruning group, a tensor outside the
traced graph, MACs from an op that is no conv or linear module) is marked `exact = False` with
the reason, and callers count such models on the really cut network instead.

`CostModel.cut` makes the cut network itself from the same trace: a copy of the weights with
the removed channels' rows and columns dropped by index selection (Torch-Pruning's own layer
pruning functions, applied by name), no re-trace, the same network `pruning.cut.prune` builds."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .graph import DependencyGraph
from .measure import count_flops, count_params, peak_memory_bytes

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Layer:
    """One conv or linear layer (its first call): the groups owning its output and input
    channels (the first, where several do), its shape and its full MACs (AMC's state reads it)."""

    name: str
    out_group: str | None
    in_group: str | None
    out_channels: int
    in_channels: int
    kernel: int
    stride: int
    height: int
    width: int
    macs: int
    depthwise: bool


@dataclass
class _Tensor:
    numel: int
    itemsize: int
    shape: tuple[int, ...]
    grad_fn: Any
    output_nr: int = 0


@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: list[_Tensor]
    output: _Tensor | None


class _Recorder:
    """Forward hooks on every leaf module (the modules `peak_memory_bytes` hooks) that record,
    per call, its tensors' shapes and autograd nodes; only the last forward of the model is kept."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[_Call] = []
        names = {m: n for n, m in model.named_modules()}
        self.handles = [model.register_forward_pre_hook(lambda *_: self.calls.clear())]
        for m in model.modules():
            if not list(m.children()):
                self.handles.append(m.register_forward_hook(self._hook(names[m])))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            ins = [_record(t) for t in inputs if torch.is_tensor(t)]
            self.calls.append(_Call(name, module, ins, _record(output) if torch.is_tensor(output) else None))

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _record(t: torch.Tensor) -> _Tensor:
    return _Tensor(t.numel(), t.element_size(), tuple(t.shape), t.grad_fn, t.output_nr)


def trace(
    model: nn.Module, input_shape: Sequence[int], ignored: list[str] | None = None
) -> tuple[DependencyGraph, CostModel]:
    """The dependency graph of `model` at `input_shape` (C, H, W) and its cost model, from one trace."""
    device = next(model.parameters()).device
    recorder = _Recorder(model)
    try:
        graph = DependencyGraph(model, torch.zeros(1, *input_shape[-3:], device=device), ignored)
    finally:
        recorder.close()
    return graph, CostModel(model, input_shape, graph, recorder.calls)


class _Dims:
    """Sizes that are affine in the channels removed per group: `full - (A @ removed) // den`.
    Row 0 is the constant 1. A coefficient is a fraction where a size holds one part of a
    split group (each of its n parts loses 1/n of the group's cut, a multiple of n): the row
    is scaled to whole numbers and `den` divides it back."""

    def __init__(self, n_groups: int) -> None:
        self.full: list[int] = [1]
        self.rows: list[np.ndarray] = [np.zeros(n_groups, dtype=np.int64)]
        self.den: list[int] = [1]
        self.index: dict[Any, int] = {}

    def add(self, key: Any, full: int, coef: Mapping[int, Fraction]) -> int:
        if key in self.index:
            return self.index[key]
        den = math.lcm(1, *(Fraction(c).denominator for c in coef.values()))
        row = np.zeros(len(self.rows[0]), dtype=np.int64)
        for g, c in coef.items():
            row[g] = int(c * den)
        self.full.append(int(full))
        self.rows.append(row)
        self.den.append(den)
        self.index[key] = len(self.full) - 1
        return self.index[key]


class _Terms:
    """A sum of `mult * dims[a] * (dims[b] // div)` terms."""

    def __init__(self) -> None:
        self.mult: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.div: list[int] = []

    def add(self, mult: int, a: int = 0, b: int = 0, div: int = 1) -> None:
        self.mult.append(int(mult))
        self.a.append(a)
        self.b.append(b)
        self.div.append(int(div))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(x, dtype=np.int64) for x in (self.mult, self.a, self.b, self.div))


def _sum(terms: tuple[np.ndarray, ...], dims: np.ndarray) -> int:
    mult, a, b, div = terms
    return int((mult * dims[a] * (dims[b] // div)).sum())


class CostModel:
    """Exact MACs, parameters and peak memory of `model` cut to kept channels per group.

    Build it with `trace` (which records the tensors it needs while the graph is traced).
    `exact` is True when the model covers every layer and matches the counters on the full
    network; otherwise `reason` says why, and the counts must come from the cut network."""

    def __init__(
        self, model: nn.Module, input_shape: Sequence[int], graph: DependencyGraph, calls: list[_Call]
    ) -> None:
        self.graph = graph
        self.input_shape = tuple(int(s) for s in input_shape[-3:])
        self.keys = [g.key for g in graph.groups]
        self.channels = np.asarray([g.channels for g in graph.groups], dtype=np.int64)
        self._pos = {k: i for i, k in enumerate(self.keys)}
        self.reason = ""
        self.layers: list[Layer] = []
        # per group, Torch-Pruning's coupled (dependency, indices, root indices) over all channels
        self._items: list[list[tuple[Any, list[int], list[int]]]] = []
        names = {m: n for n, m in model.named_modules()}
        self._names = names
        coef: dict[tuple[Any, str], dict[int, Fraction]] = {}
        self._pinned = np.asarray([getattr(g, "pinned", None) is not None for g in graph.groups], dtype=bool)
        self._grouped: list[list[nn.Module]] = []
        for gi, g in enumerate(graph.groups):
            items: list[tuple[Any, list[int], list[int]]] = []
            cuttable = not self._pinned[gi]
            grouped = list(getattr(graph, "_grouped_in", {}).get(g.key, [])) if cuttable else []
            for item in _coupled(graph, g.key, g.channels) if cuttable else []:
                dep, idxs = item.dep, list(item.idxs)
                per = Fraction(len(idxs), g.channels)  # 1/n: one of a split group's n parts, cut evenly
                if per.denominator > 1 and (not g.parts or len(g.parts) % per.denominator):
                    self._unsupported(f"{dep} maps {g.channels} channels to {len(idxs)} entries")
                out = bool(graph.dg.is_out_channel_pruning_fn(dep.handler))
                slot = coef.setdefault((dep.target, "out" if out else "in"), {})
                slot[gi] = slot.get(gi, Fraction(0)) + per
                if not out and dep.target.module in grouped:
                    continue  # the graph cuts a grouped conv's inputs in whole conv groups (see `cut`)
                items.append((dep, idxs, list(item.root_idxs)))
            self._items.append(items)
            self._grouped.append(grouped)
        self._coef = coef
        self._dims = _Dims(len(self.keys))
        self._node_of = {node.grad_fn: node for node in graph.dg.module2node.values() if node.grad_fn is not None}
        self._macs, self._params, self._weight_bytes = _Terms(), _Terms(), _Terms()
        self._build_layers(model, calls)
        self._build_weights(model)
        self._build_activations(calls)
        self._A = np.stack(self._dims.rows)
        self._den = np.asarray(self._dims.den, dtype=np.int64)
        self._full = np.asarray(self._dims.full, dtype=np.int64)
        self._macs_t = self._macs.arrays()
        self._params_t = self._params.arrays()
        self._weight_t = self._weight_bytes.arrays()
        self._act = np.asarray(self._act_rows, dtype=np.int64).reshape(len(self._act_rows), len(self._full))
        self.full = self.count({})
        self.full_flops, self.full_params = self.full["flops"], self.full["params"]
        if self.exact:
            self._check(model)

    # ---- building ---------------------------------------------------------------------------
    def _unsupported(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    @property
    def exact(self) -> bool:
        """Whether the counts equal the cut network's (checked on the full network)."""
        return not self.reason

    def _node_dim(self, node: Any, side: str, full: int) -> int:
        """The dims row of a graph node's output (or input) size; a depthwise conv's input,
        output and groups are one size, all cut by Torch-Pruning's depthwise handler."""
        c = dict(self._coef.get((node, side), {}))
        if side == "in" and _is_depthwise(node.module):
            c = dict(self._coef.get((node, "out"), {}))
        return self._dims.add((id(node), side, full), full, c)

    def _module_dim(self, module: nn.Module, side: str, full: int) -> int:
        node = self.graph.dg.module2node.get(module)
        if node is None:
            return 0 if full == 1 else self._dims.add(("const", full), full, {})
        return self._node_dim(node, side, full)

    def _group_of(self, module: nn.Module, side: str) -> str | None:
        node = self.graph.dg.module2node.get(module)
        if node is None:
            return None
        if side == "in" and _is_depthwise(module):
            side = "out"
        c = self._coef.get((node, side), {})
        return self.keys[min(c)] if c else None

    def _build_layers(self, model: nn.Module, calls: list[_Call]) -> None:
        seen = set()
        for call in calls:
            m = call.module
            if not isinstance(m, (*_CONV, nn.Linear)) or call.output is None or not call.inputs:
                continue
            x, y = call.inputs[0], call.output
            if isinstance(m, nn.Linear):
                out = self._module_dim(m, "out", m.out_features)
                inn = self._module_dim(m, "in", m.in_features)
                tokens = y.numel // m.out_features
                self._macs.add(tokens, out, inn)
                macs, k, s, h, w, dw = tokens * m.in_features * m.out_features, 1, 1, 1, 1, False
                n_out, n_in = m.out_features, m.in_features
            else:
                assert isinstance(m, nn.modules.conv._ConvNd)
                kk = int(np.prod(m.kernel_size))
                positions = int(np.prod((x.shape if m.transposed else y.shape)[2:]))
                out = self._module_dim(m, "out", m.out_channels)
                inn = self._module_dim(m, "in", m.in_channels)
                dw = _is_depthwise(m)
                w0, w1, div = self._conv_weight_dims(m, out, inn)
                self._macs.add(positions * kk, w0, w1, div)
                macs = positions * int(m.weight.numel())
                k, s = int(m.kernel_size[0]), int(m.stride[0])
                h, w = (x.shape[2], x.shape[3]) if len(x.shape) > 3 else (x.shape[-1], 1)
                n_out, n_in = m.out_channels, m.in_channels
            name = self._names[m]
            if name not in seen:
                seen.add(name)
                g_out = self._group_of(m, "out")
                self.layers.append(Layer(name, g_out, self._group_of(m, "in"), n_out, n_in, k, s, h, w, macs, dw))

    def _conv_weight_dims(self, m: nn.modules.conv._ConvNd, out: int, inn: int) -> tuple[int, int, int]:
        """(dim0, dim1, divisor of dim1) of a conv's cut weight: a conv with groups (depthwise
        or grouped, cut in whole conv groups) keeps its inputs per group; a transposed conv's
        weight is (in, out)."""
        if m.transposed:
            if m.groups > 1:
                self._unsupported(f"grouped transposed conv {self._names[m]!r}")
            return inn, out, 1
        if m.groups > 1:
            per_group = m.in_channels // m.groups
            return out, self._dims.add(("const", per_group), per_group, {}), 1
        return out, inn, 1

    def _build_weights(self, model: nn.Module) -> None:
        touched = {node.module for node, _ in self._coef}
        for m in model.modules():
            own = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            if not own:
                continue
            for pname, t in own:
                terms = self._tensor_terms(m, pname, t, touched)
                if terms is None:
                    return
                is_param = any(t is p for _, p in m.named_parameters(recurse=False))
                for mult, a, b, div in terms:
                    if is_param:
                        self._params.add(mult, a, b, div)
                    self._weight_bytes.add(mult * t.element_size(), a, b, div)

    def _tensor_terms(
        self, m: nn.Module, pname: str, t: torch.Tensor, touched: set
    ) -> list[tuple[int, int, int, int]] | None:
        """How one parameter or buffer's size follows the cut: [(mult, a, b, div)]."""
        node = self.graph.dg.module2node.get(t) if isinstance(t, nn.Parameter) else None
        if node is not None and ((node, "out") in self._coef or (node, "in") in self._coef):
            if t.dim() != 1:  # an unwrapped parameter of more dims: which one is cut is not known here
                self._unsupported(f"parameter {self._names[m]}.{pname} is cut along one of its {t.dim()} dims")
                return None
            side = "out" if (node, "out") in self._coef else "in"
            return [(1, self._node_dim(node, side, t.numel()), 0, 1)]  # an unwrapped parameter (layer scale)
        if m not in touched:
            return [(t.numel(), 0, 0, 1)]
        if isinstance(m, _CONV):
            out = self._module_dim(m, "out", m.out_channels)
            inn = self._module_dim(m, "in", m.in_channels)
            if pname == "weight":
                w0, w1, div = self._conv_weight_dims(m, out, inn)
                return [(int(np.prod(m.kernel_size)), w0, w1, div)]
            if pname == "bias":
                return [(1, out, 0, 1)]
        elif isinstance(m, nn.Linear):
            out = self._module_dim(m, "out", m.out_features)
            if pname == "weight":
                return [(1, out, self._module_dim(m, "in", m.in_features), 1)]
            if pname == "bias":
                return [(1, out, 0, 1)]
        elif isinstance(m, _NORMS):
            if pname == "num_batches_tracked":
                return [(t.numel(), 0, 0, 1)]
            if t.dim() == 1:
                return [(1, self._module_dim(m, "out", t.numel()), 0, 1)]
        elif isinstance(m, nn.PReLU) and t.numel() > 1:
            return [(1, self._module_dim(m, "out", t.numel()), 0, 1)]
        self._unsupported(f"{type(m).__name__} {self._names[m]!r} is cut but its {pname} cannot be counted")
        return None

    def _build_activations(self, calls: list[_Call]) -> None:
        """Per leaf call, bytes per unit of each dims row its tensors use (peak = max of rows)."""
        self._act_rows: list[list[int]] = []
        self._axis = _channel_axes(calls)
        pending: list[dict[int, int]] = []
        for call in calls:
            row: dict[int, int] = {}
            for t in [*call.inputs, *([call.output] if call.output is not None else [])]:
                d, per = self._tensor_dim(t)
                if d is None:
                    self._unsupported(f"a tensor of {call.name!r} is outside the traced graph")
                    return
                row[d] = row.get(d, 0) + per
            pending.append(row)
        width = len(self._dims.full)
        for row in pending:
            dense = [0] * width
            for d, v in row.items():
                dense[d] = v
            self._act_rows.append(dense)

    def _tensor_dim(self, t: _Tensor) -> tuple[int | None, int]:
        """(dims row of the tensor's channel size, bytes per channel) for one recorded tensor."""
        node = self._node_of.get(t.grad_fn) if t.grad_fn is not None else None
        parts = self.graph.part_nodes.get(t.grad_fn) if t.grad_fn is not None else None
        if parts and t.output_nr < len(parts):  # one part of a split the graph gave part nodes
            node = parts[t.output_nr]
        if node is None and t.grad_fn is not None:
            return None, 0
        if node is None or (node, "out") not in self._coef:
            return 0, t.numel * t.itemsize
        axis = self._axis.get(t.grad_fn, len(t.shape) - 1 if len(t.shape) == 3 else 1)
        ch = t.shape[axis]
        return self._node_dim(node, "out", ch), t.numel // ch * t.itemsize

    def _check(self, model: nn.Module) -> None:
        """Compare with the counters on the full network; a mismatch marks the model inexact."""
        want = {
            "flops": count_flops(model, self.input_shape),
            "params": count_params(model),
            "memory_bytes": peak_memory_bytes(model, self.input_shape),
        }
        for k, v in want.items():
            if self.full[k] != v:
                self._unsupported(f"{k} of the full network: counted {self.full[k]}, the model says {v}")

    # ---- queries ----------------------------------------------------------------------------
    def removed(self, kept: Mapping[str, int]) -> np.ndarray:
        """Channels removed per group (groups missing from `kept` keep all)."""
        k = np.fromiter((kept.get(key, -1) for key in self.keys), dtype=np.int64, count=len(self.keys))
        return np.where((k < 0) | self._pinned | self._pinned_now(), 0, self.channels - k)

    def _pinned_now(self) -> np.ndarray:
        """Groups pinned after the trace (e.g. by a trial cut): kept whole like the others."""
        groups = self.graph.groups
        return np.fromiter((getattr(g, "pinned", None) is not None for g in groups), dtype=bool, count=len(groups))

    def dims(self, kept: Mapping[str, int]) -> np.ndarray:
        """Every traced size of the cut network."""
        return self._full - (self._A @ self.removed(kept)) // self._den

    def flops(self, kept: Mapping[str, int]) -> int:
        """MACs of one single-input forward (`count_flops` on the cut network)."""
        return _sum(self._macs_t, self.dims(kept))

    def params(self, kept: Mapping[str, int]) -> int:
        """Parameters (`count_params` on the cut network)."""
        return _sum(self._params_t, self.dims(kept))

    def memory_bytes(self, kept: Mapping[str, int]) -> int:
        """Weights, buffers and the peak leaf-layer activations (`peak_memory_bytes`)."""
        d = self.dims(kept)
        return self._memory(d)

    def _memory(self, d: np.ndarray) -> int:
        peak = int((self._act @ d).max()) if len(self._act) else 0
        return _sum(self._weight_t, d) + peak

    def count(self, kept: Mapping[str, int]) -> dict[str, int]:
        """`flops`, `params` and `memory_bytes` of the network with `kept` channels per group."""
        d = self.dims(kept)
        return {"flops": _sum(self._macs_t, d), "params": _sum(self._params_t, d), "memory_bytes": self._memory(d)}

    def cost(self, kind: str, kept: Mapping[str, int]) -> float:
        """One resource (`flops`, `params` or `memory_bytes`) of a kept-channel vector."""
        return float(self.count(kept)[kind])

    # ---- cutting ----------------------------------------------------------------------------
    def cut(self, model: nn.Module, removed: Mapping[str, Sequence[int]]) -> nn.Module:
        """A copy of `model` (the traced model or one of the same architecture) with channels
        `removed[key]` of each group cut, by index selection on its weights; what
        `pruning.cut.prune` builds for the same channels, without tracing again."""
        target = copy.deepcopy(model)
        modules = dict(target.named_modules())
        todo: dict[tuple[str, Any, int], set[int]] = {}
        params: dict[tuple[str, int], set[int]] = {}  # unwrapped parameters (e.g. ConvNeXt's layer scale)
        param_names = getattr(self.graph.dg, "_param_to_name", {})
        pinned = self._pinned | self._pinned_now()
        for key, idxs in removed.items():
            drop = {int(i) for i in idxs}
            if not drop or pinned[self._pos[key]]:
                continue
            for dep, dep_idxs, roots in self._items[self._pos[key]]:
                name = self._names.get(dep.target.module)
                hit = {i for i, r in zip(dep_idxs, roots, strict=True) if r in drop}
                if name is None and dep.target.module in param_names and hit:
                    params.setdefault((param_names[dep.target.module], dep.target.pruning_dim), set()).update(hit)
                if name is None:  # an op of the graph (add, relu, flatten...): nothing to cut
                    continue
                if hit:
                    todo.setdefault((name, dep.handler, dep.target.pruning_dim), set()).update(hit)
        for (name, handler, dim), hits in todo.items():
            handler.__self__.pruning_dim = dim  # as Torch-Pruning's Dependency.__call__ does
            handler(modules[name], sorted(hits))
        for (pname, dim), hits in params.items():
            *path, leaf = pname.split(".")
            owner = target.get_submodule(".".join(path))
            old = getattr(owner, leaf)
            keep = torch.tensor(sorted(set(range(old.shape[dim])) - hits), device=old.device)
            setattr(owner, leaf, nn.Parameter(old.detach().index_select(dim, keep), requires_grad=old.requires_grad))
        for key, idxs in removed.items():
            for conv in self._grouped[self._pos[key]] if idxs and not pinned[self._pos[key]] else []:
                cut, full = modules[self._names[conv]], conv
                assert isinstance(cut, nn.modules.conv._ConvNd)
                assert isinstance(full, nn.modules.conv._ConvNd)
                cut.in_channels = full.in_channels - len(idxs)
                cut.groups = cut.in_channels // (full.in_channels // full.groups)
        for name, full in model.named_modules():  # a GroupNorm loses whole norm groups (`DependencyGraph`)
            norm = modules[name]
            if isinstance(norm, nn.GroupNorm) and isinstance(full, nn.GroupNorm) and full.num_groups > 1:
                norm.num_groups = norm.num_channels // (full.num_channels // full.num_groups)
        return target


def _channel_sizes(m: nn.Module) -> tuple[int, int] | None:
    """(input, output) channel counts of a layer that says them, else None."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm):
        return m.num_features, m.num_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1], m.normalized_shape[-1]
    return None


def _channel_axes(calls: list[_Call]) -> dict[Any, int]:
    """Per autograd node, the axis of its tensor that holds the channels, read from the layers
    that take or give that tensor (a linear or a LayerNorm on channels-last maps: the last axis;
    a conv: axis 1), where one axis alone has the layer's channel count (or the layer's usual
    axis is among several); tensors no such layer touches keep the default (axis 1; last for 3-D)."""
    axes: dict[Any, int] = {}
    for call in calls:
        sizes = _channel_sizes(call.module)
        if sizes is None or call.output is None or not call.inputs:
            continue
        usual = -1 if isinstance(call.module, nn.Linear | nn.LayerNorm) else 1
        for t, size in ((call.inputs[0], sizes[0]), (call.output, sizes[1])):
            if t.grad_fn is None or t.grad_fn in axes:
                continue
            n = len(t.shape)
            fits = [a for a in range(1, n) if t.shape[a] == size]
            if len(fits) == 1:
                axes[t.grad_fn] = fits[0]
            elif usual % n in fits:
                axes[t.grad_fn] = usual % n
    return axes


def _coupled(graph: DependencyGraph, key: str, channels: int) -> list[Any]:
    """Torch-Pruning's coupled (dependency, indices) items of every root of group `key`, for
    all its channels (the items `DependencyGraph.prune_group` applies)."""
    roots = graph._roots[key]
    items: list[Any] = []
    for root in roots if isinstance(roots, list) else [roots]:
        fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        items.extend(graph.dg.get_pruning_group(root, fn, idxs=list(range(channels))))
    return items


def _is_depthwise(m: Any) -> bool:
    """Torch-Pruning's test for the depthwise handler (groups equal to the output channels)."""
    return isinstance(m, _CONV) and m.groups == m.out_channels and m.out_channels > 1
