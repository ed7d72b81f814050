"""The channel-dependency graph: which output channels must be cut together.

Built on Torch-Pruning's DepGraph (Fang et al., CVPR 2023), which traces the model and follows
channels through residual adds, concatenations, depthwise convs, BatchNorm and the flatten into
a linear layer. This module turns its groups into stable, named `ChannelGroup`s that a policy
can address, ordered as the layers appear in the model, and adds what DepGraph leaves to its
own pruner or gets wrong:

- a grouped convolution (ResNeXt, RegNet) joins the group that feeds it and its own output
  group into one, cut in whole convolution groups (`unit` = the group width);
- a group that a split/chunk divides records its parts (`parts`), each of which must lose the
  same number of channels;
- a group normalised by a GroupNorm (FCOS's and RetinaNet's heads) is cut in whole norm groups
  (`unit` = channels per norm group) and the norm loses those groups: the groups that stay keep
  their statistics, so the cut network computes what the original does without them;
- a split whose parts are read by several layers, or a concat reading several of its parts
  (YOLOv8's C2f), gets one graph node per part, so each reader maps to the right channels;
- a group DepGraph cannot follow (a channel shuffle's reshapes, a layer whose channels it maps
  out of range, a grouped conv whose two sides cannot be cut together) is kept whole:
  `pinned` says why, and `prune` leaves it alone; so is a group holding a layer the model pins
  itself (`PINS_ATTRIBUTE`), with the model's reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.conv import _ConvNd

from .errors import UnsupportedModelError

OPTYPE = tp.ops.OPTYPE
PRUNABLE = (nn.Conv2d, nn.Linear)
"""Layers whose output channels root a channel group."""
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
"""Layers whose channels a group's cut changes (members and consumers)."""
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_SPLITS = (OPTYPE.SPLIT, OPTYPE.UNBIND)


@dataclass
class ChannelGroup:
    """Output channels of one or more layers that must be cut together.

    `key` names the group by its first layer in model order; `members` are the convs/linears
    whose output channels are cut, `bns` their norms, `consumers` the layers whose input
    channels shrink with them (a member too when it reads the group, as an FPN's smoothing
    conv does; not a depthwise conv, whose input is its output). `unit` > 1: channels go in
    aligned blocks of that many (whole groups of a grouped conv); `parts`: the channel indices
    of each part a split or chunk makes, each part losing the same number; `stream`: a residual
    add joins its channels (a ResNet stage's or an inverted-residual stage's stream, which every
    block of the stage reads and writes, as opposed to a block's inner width); `pinned`: why the
    group is kept whole (None when it can be cut); `part_layers`: layers and norms whose output
    channels are one part of the split (a C2f bottleneck's conv, added to the split's second
    half): cut with the group, not among the members a criterion scores."""

    key: str
    channels: int
    members: list[str]
    bns: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    is_stem: bool = False
    depthwise: bool = False
    unit: int = 1
    parts: list[list[int]] = field(default_factory=list)
    stream: bool = False
    pinned: str | None = None
    part_layers: list[str] = field(default_factory=list)

    @property
    def step(self) -> int:
        """Kept channels change in steps of this many: the group width, the number of parts, or 1."""
        return self.unit if self.unit > 1 else max(1, len(self.parts))

    def describe_pin(self) -> str:
        """One line naming the pinned group, its layers and why it is kept whole."""
        return f"channel group {self.key} ({', '.join(self.members)}) is kept whole: {self.pinned}"


def output_layer(model: nn.Module) -> nn.Module | None:
    """The classifier: the last Linear (or last conv if there is none) in module order."""
    last: nn.Module | None = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                last = m
    return last


PINS_ATTRIBUTE = "channel_pins"
"""A model attribute naming layers whose output channels it keeps whole: layer name -> why (a
detector's box and class outputs, a fixed decoding conv). Each such layer's group is pinned with
that reason (`ChannelGroup.pinned`), and shown as such, instead of being left out as an output."""


def declared_pins(model: nn.Module) -> dict[str, str]:
    """The layers `model` pins itself (`PINS_ATTRIBUTE`), by name, with why."""
    pins = getattr(model, PINS_ATTRIBUTE, None)
    if not isinstance(pins, dict):
        return {}
    return {str(k): str(v) for k, v in pins.items()}


def head_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """The conv or linear layers nearest the network's outputs (each of them, by
    `pruning.tasks.named_outputs`), found by walking the autograd graph back from every output
    (through pooling, resizing, concatenation, reshapes and other ops, to the first such layer
    on every path): their output channels are the network's outputs, so they are not cut. For
    a classifier that is its last layer (`output_layer`); for a detector, every level's box and
    class convs and the box decoder's fixed conv (a YOLO DFL), however the outputs are joined."""
    from .tasks import named_outputs

    made: dict[Any, nn.Module] = {}

    def hook(m: nn.Module, _: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made[out.grad_fn] = m

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, _ConvNd))]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            outs = named_outputs(model(example_inputs))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    found: list[nn.Module] = []
    seen: set[Any] = set()
    todo: list[Any] = [t.grad_fn for t in outs.values() if t.grad_fn is not None]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in made:
            if made[fn] not in found:
                found.append(made[fn])
            continue
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return found


def _plain(i: Any) -> int:
    return int(getattr(i, "idx", i))


def _root(i: Any) -> int | None:
    r = getattr(i, "root_idx", i)
    return None if r is None else int(r)


def _out_fn(m: nn.Module) -> Any:
    """DepGraph's function that prunes a layer's output channels."""
    return tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels


def _is_depthwise(m: nn.Module) -> bool:
    """A conv DepGraph couples input to output (groups = out channels > 1)."""
    return isinstance(m, _CONV_TYPES) and m.groups == m.out_channels > 1


def _is_grouped(m: nn.Module) -> TypeGuard[_ConvNd]:
    """A conv with groups that DepGraph does not treat as depthwise (in = out = groups)."""
    if not isinstance(m, _CONV_TYPES) or m.groups == 1:
        return False
    return not (m.in_channels == m.out_channels == m.groups)


def _channel_size(module: nn.Module, out: bool) -> int | None:
    """How many channels `module` has on the side a dependency prunes (None: not a layer we check)."""
    if isinstance(module, _CONV_TYPES):
        return int(module.out_channels if out else module.in_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features if out else module.in_features)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    return None


@dataclass
class _Raw:
    """One DepGraph group (or a root DepGraph could not follow), before merging."""

    root: nn.Module
    name: str
    channels: int
    members: list[str] = field(default_factory=list)
    bns: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    grouped_in: list[_ConvNd] = field(default_factory=list)
    parts: list[list[int]] = field(default_factory=list)
    part_layers: list[str] = field(default_factory=list)
    residual: bool = False
    problem: str | None = None


UNMAPPED_RESHAPE = (
    "its channels go through a reshape the graph cannot map (a channel shuffle written view(b, -1, h, w))"
)
"""Why a group is pinned when the trace cannot follow it and the network has such a reshape."""


def _reshape_mapping_guarded() -> None:
    """Let DepGraph leave unmapped a reshape whose channels it cannot relate to its input's
    (it divides by a channel count it infers as 0: torchvision's channel shuffle, whose last
    view is `x.view(batch, -1, h, w)`), instead of failing the whole trace. The groups through
    such a reshape are then found to be a channel shuffle and pinned (`_describe`), as when
    the view names its channels. Installed once, at import: the guard only differs from
    DepGraph's own mapping where that raises."""
    index_mapping = tp.dependency.index_mapping
    update = index_mapping.update_reshape_index_mapping
    if getattr(update, "guarded", False):
        return

    def guarded(graph: Any, node: Any) -> None:
        try:
            update(graph, node)
        except ZeroDivisionError:  # nothing was mapped for this reshape (the division comes before any assignment)
            graph.unmapped_reshapes = [*getattr(graph, "unmapped_reshapes", []), node]

    guarded.guarded = True  # type: ignore[attr-defined]
    index_mapping.update_reshape_index_mapping = guarded


_reshape_mapping_guarded()


class DependencyGraph:
    """Prunable channel groups of a model, traced with one forward on `example_inputs`."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, ignored: list[str] | None = None) -> None:
        self.model = model
        self.example_inputs = example_inputs
        names = {m: n for n, m in model.named_modules()}
        self._names = names
        self._order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        modules = dict(model.named_modules())
        self._modules = modules
        self._declared = declared_pins(model)
        ignored_modules = [modules[n] for n in (ignored or []) if n in modules]
        out = output_layer(model)
        if out is not None:
            ignored_modules.append(out)
        try:
            ignored_modules += [m for m in head_layers(model, example_inputs) if m not in ignored_modules]
            # a layer the model pins says why itself: a group of its own, kept whole, not left out
            ignored_modules = [m for m in ignored_modules if names.get(m) not in self._declared]
            self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        except Exception as exc:  # the tracer fails in many ways on unsupported code
            raise UnsupportedModelError(f"cannot trace the model's channel dependencies: {exc}") from exc
        self.part_nodes: dict[Any, list[Any]] = {}  # a split's autograd node -> its part nodes
        self._bad_splits = self._order_split_outputs()
        raw = self._raw_groups(ignored_modules)
        first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
        self._roots: dict[str, list[nn.Module]] = {}
        self._grouped_in: dict[str, list[_ConvNd]] = {}
        self._group_norms: dict[str, list[nn.GroupNorm]] = {}
        groups = [self._merge(comp, first_conv) for comp in self._components(raw)]
        self.groups = sorted(groups, key=lambda grp: self._order[grp.key])
        self.by_key = {grp.key: grp for grp in self.groups}

    # ---- building ---------------------------------------------------------------------------
    def _order_split_outputs(self) -> set[nn.Module]:
        """Put each split's consumers in the order of the parts they read. DepGraph maps part i
        to its i-th consumer in traversal order, which can be the reverse (a chunk's halves
        swapped: the producer loses one half's channels, the consumers the other's). Returns
        the splits whose parts cannot be told apart (a part read by several consumers)."""
        bad: set[nn.Module] = set()
        for node in list(self.dg.module2node.values()):
            if node.type not in _SPLITS or node.grad_fn is None:
                continue
            part: dict[int, int] = {}
            for k, out in enumerate(node.outputs):
                nrs = [nr for fn, nr in getattr(out.grad_fn, "next_functions", ()) if fn is node.grad_fn]
                if len(nrs) == 1:
                    part[k] = nrs[0]
            if len(part) == len(node.outputs) and len(set(part.values())) == len(part):
                node.outputs = [node.outputs[k] for k in sorted(part, key=part.__getitem__)]
            elif not self._split_into_part_nodes(node):
                bad.add(node.module)
        return bad

    def _split_into_part_nodes(self, node: Any) -> bool:
        """Give a channel split whose parts are read by several layers, or a layer (a concat)
        reading several of its parts (YOLOv8's C2f: the chunk's second half feeds a bottleneck
        and the concat, which also reads the first half), one pass-through node per part, so
        DepGraph's split mapping (part i to the split's i-th output) holds: the split's outputs
        become the part nodes, each read by the layers that read that part. False when the
        parts cannot be told (not a split along channels, a reader reached otherwise)."""
        fn = node.grad_fn
        sizes = getattr(fn, "_saved_self_sym_sizes", None) or getattr(fn, "_saved_self_sizes", None)
        dim = getattr(fn, "_saved_dim", None)
        if node.type != OPTYPE.SPLIT or sizes is None or dim != 1 or len(sizes) < 2:
            return False
        total = int(sizes[1])
        if hasattr(fn, "_saved_split_sizes"):
            split_sizes = [int(c) for c in fn._saved_split_sizes]
        elif hasattr(fn, "_saved_split_size") and int(fn._saved_split_size) > 0:
            size = int(fn._saved_split_size)
            split_sizes = [min(size, total - k) for k in range(0, total, size)]
        else:
            return False
        n_parts = len(split_sizes)
        readers: list[tuple[Any, list[int]]] = []
        for out in dict.fromkeys(node.outputs):
            nrs = [nr for f, nr in getattr(out.grad_fn, "next_functions", ()) if f is fn]
            if not nrs or any(not 0 <= nr < n_parts for nr in nrs) or out.inputs.count(node) != len(nrs):
                return False
            readers.append((out, nrs))
        parts = []
        for k in range(n_parts):
            op = tp.ops._ElementWiseOp(self.dg._op_id, f"SplitPart{k}")
            self.dg._op_id += 1
            part = tp.dependency.Node(module=op, grad_fn=None)
            part.inputs = [node]
            self.dg.module2node[op] = part
            parts.append(part)
        node.outputs = parts
        self.part_nodes[fn] = parts
        node.module.split_sizes = split_sizes
        node.module.offsets = [sum(split_sizes[:k]) for k in range(n_parts + 1)]
        for out, nrs in readers:
            order = iter(nrs)
            out.inputs = [parts[next(order)] if i is node else i for i in out.inputs]
            for nr in nrs:
                parts[nr].outputs.append(out)
            if out.type == OPTYPE.CONCAT:
                out.module.concat_sizes = None  # inferred again from the part nodes
        for n in [node, *parts, *(out for out, _ in readers)]:
            self._link(n)
        return True

    def _link(self, node: Any) -> None:
        """DepGraph's inter-layer dependencies of one node, made again from its inputs and outputs."""
        pruner = self.dg.get_pruner_of_module
        node.dependencies = [
            tp.dependency.Dependency(
                trigger=pruner(node.module).prune_in_channels,
                handler=pruner(i.module).prune_out_channels,
                source=node,
                target=i,
            )
            for i in node.inputs
        ] + [
            tp.dependency.Dependency(
                trigger=pruner(node.module).prune_out_channels,
                handler=pruner(o.module).prune_in_channels,
                source=node,
                target=o,
            )
            for o in node.outputs
        ]

    def _raw_groups(self, ignored: list[nn.Module]) -> list[_Raw]:
        """DepGraph's groups, one root at a time (as `get_all_groups` does), so one root the
        tracer cannot follow becomes a pinned group instead of failing the whole model."""
        visited: set[nn.Module] = set()
        skip = set(ignored) | set(self.dg.IGNORED_LAYERS_IN_TRACING)
        raw: list[_Raw] = []
        roots = sorted((m for m in self.dg.module2node if m in self._names), key=lambda m: self._order[self._names[m]])
        for m in roots:
            if m in skip or m in visited or not isinstance(m, PRUNABLE) or m not in self._names:
                continue
            channels = int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            fn = _out_fn(m)
            name = self._names[m]
            try:
                group = self.dg.get_pruning_group(m, fn, list(range(channels)))
            except Exception as exc:  # noqa: BLE001 - e.g. through a reshape DepGraph could not map; pinned
                visited.add(m)
                why = f"the graph cannot follow its channels ({exc})"
                if getattr(self.dg, "unmapped_reshapes", None):
                    why = f"{UNMAPPED_RESHAPE} ({exc})"
                raw.append(_Raw(m, name, channels, [name], problem=why))
                continue
            outs = [dep.target.module for dep, _ in group if self.dg.is_out_channel_pruning_fn(dep.handler)]
            visited.update(outs)
            if any(o in skip for o in outs):
                continue  # coupled to the output layer or an ignored one: not prunable
            r = self._describe(m, name, channels, group)
            declared = dict.fromkeys(self._declared[n] for n in r.members if n in self._declared)
            r.problem = "; ".join(declared) or r.problem
            raw.append(r)
        return raw

    def _describe(self, root: nn.Module, name: str, channels: int, group: Any) -> _Raw:
        """Members, BNs and consumers of one DepGraph group, its split parts, and what is wrong
        with it, if anything (checked on DepGraph's own index mapping)."""
        r = _Raw(root, name, channels)
        partitions: list[list[list[int]]] = []
        partial: list[tuple[str, int, list[int], bool]] = []  # layers and norms of another size than the group
        shuffle = False
        part_split = False  # split by a node given part nodes (`_split_into_part_nodes`)
        for dep, idxs in group:
            mod = dep.target.module
            out = self.dg.is_out_channel_pruning_fn(dep.handler)
            kind = dep.target.type
            if kind == OPTYPE.ELEMENTWISE and type(dep.target.grad_fn).__name__.startswith(("Add", "Sub")):
                r.residual = True  # a residual add (a product, as in squeeze-and-excitation, is not)
            if kind == OPTYPE.RESHAPE:
                fn = dep.target.grad_fn
                sizes = getattr(fn, "_saved_self_sym_sizes", None) or getattr(fn, "_saved_self_sizes", None)
                shuffle = shuffle or (sizes is not None and len(sizes) >= 5)
            if mod in self._bad_splits:
                r.problem = r.problem or "a split's parts are read by several layers the graph cannot tell apart"
            if kind in _SPLITS and getattr(mod, "offsets", None):
                partitions.append(self._split_parts(mod.offsets, idxs))
                part_split = part_split or dep.target.grad_fn in self.part_nodes
            layer = self._names.get(mod)
            if layer is None:
                continue
            size = _channel_size(mod, out)
            plain = [_plain(i) for i in idxs]
            if size is not None and (len(set(plain)) != len(plain) or any(not 0 <= i < size for i in plain)):
                r.problem = r.problem or f"the graph maps its channels out of range at {layer}"
            norm = isinstance(mod, _NORMS)
            if size is not None and size != channels and (norm or (isinstance(mod, LAYERS) and out)):
                roots = sorted({k for i in idxs if (k := _root(i)) is not None})
                partial.append((layer, size, roots, norm))  # checked below, once the parts are known
            elif isinstance(mod, LAYERS) and out:
                r.members.append(layer)
            elif isinstance(mod, _NORMS):
                r.bns.append(layer)
            elif isinstance(mod, LAYERS) and not _is_depthwise(mod):
                r.consumers.append(layer)
                if _is_grouped(mod):
                    r.grouped_in.append(mod)
        if shuffle:  # the most telling reason first
            r.problem = "a reshape splits its channels into groups (a channel shuffle)"
        distinct = {tuple(map(tuple, p)) for p in partitions if len(p) > 1}
        if len(distinct) > 1:
            r.problem = r.problem or "its channels are split in two different ways"
        elif distinct:
            r.parts = [list(p) for p in next(iter(distinct))]
            if sum(len(p) for p in r.parts) != channels:
                r.problem = r.problem or "a split takes only some of its channels"
        for layer, size, roots, norm in partial:  # a layer added to one part of a split (C2f's bottlenecks) is fine
            if part_split and roots in r.parts and size == len(roots):
                r.part_layers.append(layer)
                continue
            if norm:  # e.g. a norm of a concat the group is one input of
                r.bns.append(layer)
                continue
            r.members.append(layer)
            r.problem = r.problem or f"{layer} has {size} channels where the group has {channels}"
        return r

    @staticmethod
    def _split_parts(offsets: list[int], idxs: Iterable[Any]) -> list[list[int]]:
        """The group's (root) channel indices in each part of a split with these offsets."""
        parts: list[list[int]] = [[] for _ in range(len(offsets) - 1)]
        for i in idxs:
            pos, root = _plain(i), _root(i)
            for k in range(len(offsets) - 1):
                if offsets[k] <= pos < offsets[k + 1] and root is not None:
                    parts[k].append(root)
        return [sorted(p) for p in parts if p]

    def _components(self, raw: list[_Raw]) -> list[tuple[list[_Raw], int, str | None]]:
        """Raw groups joined through grouped convs (its input group with its output group),
        each with its unit (the group width) and a reason when they cannot be cut together."""
        parent = list(range(len(raw)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner_out = {r.name: i for i, r in enumerate(raw)}
        for i, r in enumerate(raw):
            for name in r.members:
                owner_out.setdefault(name, i)
        units: dict[int, set[int]] = {}
        problems: dict[int, str] = {}
        for i, r in enumerate(raw):
            for conv in r.grouped_in:
                name = self._names[conv]
                j = owner_out.get(name)
                ipg, opg = conv.in_channels // conv.groups, conv.out_channels // conv.groups
                if j is None:
                    problems[i] = f"grouped conv {name} feeds the output, so its groups cannot be cut"
                    continue
                a, b = find(i), find(j)
                parent[a] = b
                units.setdefault(b, set()).update(units.pop(a, set()) if a != b else set())
                units[b].add(opg)
                if ipg != opg:
                    problems[i] = f"grouped conv {name} has {ipg} input and {opg} output channels per group"
                elif r.channels != conv.in_channels:
                    problems[i] = f"grouped conv {name} sees only part of the group's channels"
        for j, r in enumerate(raw):  # a grouped conv whose input group does not exist
            for name in r.members:
                conv = self._modules[name]
                if _is_grouped(conv) and not any(conv in x.grouped_in for x in raw):
                    problems[j] = f"the input of grouped conv {name} cannot be cut"
        comps: dict[int, list[int]] = {}
        for i in range(len(raw)):
            comps.setdefault(find(i), []).append(i)
        out = []
        for root, idx in comps.items():
            members = [raw[i] for i in idx]
            unit_set = units.get(root, set())
            reason = next((problems[i] for i in idx if i in problems), None)
            reason = reason or next((r.problem for r in members if r.problem), None)
            if len(unit_set) > 1:
                reason = reason or f"grouped convs with different group widths {sorted(unit_set)} share its channels"
            unit = next(iter(unit_set)) if len(unit_set) == 1 else 1
            if len(members) > 1 and len({r.channels for r in members}) > 1:
                reason = reason or "grouped convs join groups with different channel counts"
            if unit > 1 and any(r.parts for r in members):
                reason = reason or "a grouped conv and a split share its channels"
            if unit > 1 and members[0].channels % unit:
                reason = reason or f"{members[0].channels} channels are not whole groups of {unit}"
            out.append((members, unit, reason))
        return out

    def _merge(self, comp: tuple[list[_Raw], int, str | None], first_conv: str | None) -> ChannelGroup:
        raws, unit, reason = comp
        order = self._order

        def ordered(names: Iterable[str]) -> list[str]:
            return sorted(set(names), key=order.__getitem__)

        members = ordered(n for r in raws for n in r.members)
        roots = sorted(raws, key=lambda r: order[r.name])
        key = members[0]
        self._roots[key] = [r.root for r in roots]
        self._grouped_in[key] = [c for r in raws for c in r.grouped_in]
        channels = roots[0].channels
        parts = next((r.parts for r in raws if r.parts), [])
        if parts and len({len(p) for p in parts}) > 1:
            reason = reason or "a split makes parts of different sizes"
        bns = ordered(n for r in raws for n in r.bns)
        norms = [(n, m) for n in bns if isinstance(m := self._modules[n], nn.GroupNorm) and m.num_groups > 1]
        self._group_norms[key] = [m for _, m in norms]
        for name, norm in norms:
            size = norm.num_channels // norm.num_groups
            if norm.num_channels != channels:
                reason = (
                    reason or f"GroupNorm {name} normalises {norm.num_channels} channels where the group has {channels}"
                )
            elif size > 1 and unit > 1 and size != unit:
                reason = reason or f"GroupNorm {name} groups {size} channels where its convs group {unit}"
            elif size > 1 and parts:
                reason = reason or f"GroupNorm {name} and a split share its channels"
            elif size > 1:
                unit = size
        return ChannelGroup(
            key=key,
            channels=channels,
            members=members,
            bns=bns,
            consumers=ordered(n for r in raws for n in r.consumers),
            is_stem=first_conv in members,
            depthwise=any(isinstance(self._modules[m], nn.Conv2d) and self._modules[m].groups > 1 for m in members),
            unit=unit if reason is None else 1,
            parts=parts if reason is None else [],
            stream=any(r.residual for r in raws),
            pinned=reason,
            part_layers=ordered(n for r in raws for n in r.part_layers),
        )

    # ---- queries and cutting ------------------------------------------------------------------
    @property
    def pinned(self) -> dict[str, str]:
        """Groups kept whole, with why."""
        return {g.key: g.pinned for g in self.groups if g.pinned is not None}

    def pin(self, key: str, reason: str) -> None:
        """Keep group `key` whole from now on (e.g. after a trial cut of it failed)."""
        group = self.by_key[key]
        if group.pinned is None:
            group.pinned, group.unit, group.parts = reason, 1, []

    def following_bn(self, member: str) -> str | None:
        """The BatchNorm that directly consumes a member layer's output, if any (where
        data-dependent criteria read activations: after BN, before the ReLU)."""
        module = next((m for m, n in self._names.items() if n == member), None)
        node = self.dg.module2node.get(module) if module is not None else None
        if node is None:
            return None
        for out in node.outputs:
            if isinstance(out.module, nn.modules.batchnorm._BatchNorm) and out.module in self._names:
                return self._names[out.module]
        return None

    def consumer_inputs(self, key: str, idxs: list[int]) -> dict[str, list[int]]:
        """Per consumer layer (a conv or linear outside the group, not a grouped conv joined into
        it), its input channels, in its own indexing (through concats, splits and flattens),
        that go when group `key` loses channels `idxs`: what a cut drops from each consumer."""
        grouped = set(self._grouped_in[key])
        consumers = set(self.by_key[key].consumers) - {self._names[m] for m in grouped}
        found: dict[str, set[int]] = {}
        for root in self._roots[key]:
            fn = _out_fn(root)
            for dep, dep_idxs in self.dg.get_pruning_group(root, fn, idxs=sorted(idxs)):
                mod = dep.target.module
                name = self._names.get(mod)
                if name in consumers and self.dg.is_in_channel_pruning_fn(dep.handler):
                    found.setdefault(name, set()).update(_plain(i) for i in dep_idxs)
        return {name: sorted(v) for name, v in found.items()}

    def prune_group(self, key: str, idxs: list[int]) -> None:
        """Remove output channels `idxs` of group `key` and everything coupled to them. A
        grouped conv joined into the group loses the whole conv groups whose channels go, a
        GroupNorm the whole norm groups."""
        if not idxs:
            return
        norms = [(m, m.num_channels // m.num_groups) for m in self._group_norms[key]]
        grouped = self._grouped_in[key]
        before = {conv: (conv.in_channels, conv.in_channels // conv.groups) for conv in grouped}
        for root in self._roots[key]:
            fn = _out_fn(root)
            group = self.dg.get_pruning_group(root, fn, idxs=sorted(idxs))
            # DepGraph's own cut of a grouped conv's inputs assumes its pruner's channel layout;
            # whole groups leave the per-group weights as they are, so only the counts change
            group._group = [
                item
                for item in group._group
                if not (item.dep.target.module in before and self.dg.is_in_channel_pruning_fn(item.dep.handler))
            ]
            group.prune()
        for conv, (in_channels, per_group) in before.items():
            conv.in_channels = in_channels - len(idxs)
            conv.groups = conv.in_channels // per_group
        for norm, size in norms:  # Torch-Pruning cuts its weights and channel count, not its groups
            norm.num_groups = norm.num_channels // size
