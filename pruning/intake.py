"""Networks from outside the zoo: `torch.export` programs (`.pt2`) and `package.module:factory`
references, turned into modules the dependency graph can cut.

An exported program is a graph of ATen calls with its weights as inputs, not a tree of modules,
so `convert_program` rebuilds it as a plain `torch.fx.GraphModule`: every conv, transposed conv,
batch norm, linear, layer norm, group norm and PReLU whose weights are parameters becomes the
matching `nn` module, named after its weight's fully qualified name in the user's network
(`layer1.0.conv1`), and dropout becomes `nn.Dropout` so the module trains and evaluates like the
original; every other op stays a graph op. Shape arguments that hold a channel count (a `view`
to `[batch, 512]`, the `expand` of a squeeze-excitation gate, an even `split`) are rewritten to
follow their input's size at run time, so the graph still runs once channels are cut.

A `.pt2` file is a zip archive; `torch.export.load` unpickles some of its parts when asked to
(legacy weights, custom objects, sample inputs it cannot read safely), so `check_archive` first
refuses any archive that holds such a part: loading a program never runs code from the file.
`load_program` then requires a dynamic batch dimension and `intake_program` checks the converted
module against the program on random inputs before anything uses it.

A program takes one image batch and returns one tensor, or a tuple, list or dict of tensors
(e.g. `{"out": ..., "aux": ...}`): the converted module returns the same structure, every
output is verified, and the outputs are named as `pruning.tasks.named_outputs` names them (a
dict's keys, a tuple's positions).
"""

from __future__ import annotations

import importlib
import io
import json
import math
import operator
import re
import tokenize
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._sympy.functions as sympy_functions
from torch import fx, nn

from .errors import PruningError, UnsupportedModelError
from .tasks import max_difference

EXPORT_CALL = (
    "torch.export.save(torch.export.export(model.eval(), (x,), "
    'dynamic_shapes=({0: torch.export.Dim("batch")},)), "model.pt2")'
)
"""The one-line export a user runs on their network (`x`: one example batch of two or more)."""

MAX_ARCHIVE_ENTRIES = 100_000
VERIFY_ATOL = 1e-4
aten = torch.ops.aten

# Archive members torch.export.save writes (below the archive's root folder) that load without pickle.
_SAFE_MEMBERS = re.compile(
    r"(\.data/(serialization_id|version)|archive_format|archive_version|byteorder|"
    r"models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+|"
    r"data/constants/model_constants_config\.json|data/constants/tensor_\d+|"
    r"data/sample_inputs/model\.pt|extra/[\w.\-]+)"
)


# Names a symbolic size expression in the program's JSON may use (torch.export.load parses them
# with sympy, which evaluates Python): sympy's and torch's size functions, and symbol names.
_EXPR_NAMES = frozenset(
    {"Symbol", "Integer", "Rational", "Float", "Max", "Min", "Abs", "floor", "ceiling", "sqrt", "Mul", "Add"}
    | {"Pow", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo", "nan", "zoo"}
    | {"positive", "negative", "integer", "real", "nonnegative", "nonpositive", "finite", "even", "odd"}
    | set(getattr(sympy_functions, "__all__", ()))
)
_EXPR_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "==", "!=", "<", "<=", ">", ">="})
_SYMBOL = re.compile(r"[a-z]+\d+")
# Python callables a program's graph may call besides ATen/prims operators: size arithmetic.
_SIZE_OPS = frozenset(
    {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv}
    | {operator.mod, operator.neg, operator.pow, operator.eq, operator.ne, operator.lt, operator.le}
    | {operator.gt, operator.ge, math.ceil, math.floor, math.sqrt, math.trunc, torch.sym_int, torch.sym_float}
    | {torch.sym_max, torch.sym_min, torch.sym_not, torch.sym_ite, torch.sym_sqrt}
)


class ProgramError(UnsupportedModelError):
    """A `.pt2` file Secateurs cannot take: not a program, unsafe to load, or not convertible."""


def num_outputs(output_shape: Sequence[int]) -> int:
    """Classes a program gives: its output's size after the batch (1 for a scalar output)."""
    return int(output_shape[0]) if len(output_shape) else 1


@dataclass
class Intake:
    """An exported program converted for cutting: the module (eval mode), its input shape
    (C, H, W), its (first) output's shape without the batch, the converted layers by the
    user's names, how far the module's outputs were from the program's on random inputs, and
    every output's shape by name (`program_outputs`)."""

    module: fx.GraphModule
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    layers: dict[str, str]
    max_diff: float
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        """The program's output names, in order (`pruning.tasks.named_outputs`)."""
        return list(self.outputs) or ["output"]

    @property
    def num_outputs(self) -> int:
        """Classes (the output's size after the batch)."""
        return num_outputs(self.output_shape)


# ---------------------------------------------------------------------------------------------
# Loading


def check_archive(path: str | Path, max_bytes: int | None = None) -> None:
    """Refuse a `.pt2` that is not a `torch.export.save` archive holding only parts that load
    without unpickling: tensors as raw bytes with JSON configs, no pickled weights or
    constants, no custom objects, no compiled (AOTInductor) code, sample inputs that load with
    `weights_only=True`. `max_bytes` bounds the uncompressed total."""
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise ProgramError(f"not a torch.export program (.pt2 zip archive); write one with {EXPORT_CALL}")
    with zipfile.ZipFile(p) as z:
        infos = z.infolist()
        if len(infos) > MAX_ARCHIVE_ENTRIES:
            raise ProgramError(f"the archive holds {len(infos):,} files (at most {MAX_ARCHIVE_ENTRIES:,})")
        total = sum(i.file_size for i in infos)
        if max_bytes is not None and total > max_bytes:
            raise ProgramError(f"the archive unpacks to {total:,} bytes (at most {max_bytes:,})")
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1:
            raise ProgramError("not a torch.export.save archive (its files do not share one root folder)")
        root = roots.pop()
        for info in infos:
            rel = info.filename.split("/", 1)[1] if "/" in info.filename else ""
            if info.is_dir():
                continue
            if not _SAFE_MEMBERS.fullmatch(rel):
                raise ProgramError(
                    f"the archive holds {rel or info.filename!r}, which Secateurs does not load "
                    "(pickled data, compiled code or another model); save the program with torch.export.save"
                )
        for kind in ("weights", "constants"):
            name = f"{root}/data/{kind}/model_{kind}_config.json"
            if name not in z.namelist():
                raise ProgramError(f"not a torch.export.save archive (no {kind} config)")
            try:
                config = json.loads(z.read(name)).get("config", {})
            except (ValueError, AttributeError) as exc:
                raise ProgramError(f"the archive's {kind} config is not valid JSON") from exc
            for fqn, meta in config.items():
                if not isinstance(meta, dict) or meta.get("use_pickle") or meta.get("tensor_meta") is None:
                    raise ProgramError(f"the archive stores {kind[:-1]} {fqn!r} pickled; Secateurs does not unpickle")
        try:
            program = json.loads(z.read(f"{root}/models/model.json"))
        except (KeyError, ValueError) as exc:
            raise ProgramError("not a torch.export.save archive (no readable models/model.json)") from exc
        _check_expressions(program)
        if any(not _safe_guard(g) for g in program.get("guards_code") or []):
            raise ProgramError("the program carries guard code beyond size checks, which Secateurs does not run")
        sample = f"{root}/data/sample_inputs/model.pt"
        if sample in z.namelist():
            try:
                torch.load(io.BytesIO(z.read(sample)), map_location="cpu", weights_only=True)
            except Exception as exc:  # any failure means it would need full unpickling
                raise ProgramError("the archive's example inputs are not plain tensors") from exc


_INPUT_SIZE = re.compile(r"L\['\w+'\]\.(size|stride)\(\)\[\d+\]")


def _safe_guard(code: str) -> bool:
    """A guard (`L['x'].size()[0] == L['y'].size()[0]`, `2 <= L['x'].size()[0]`): input sizes,
    numbers and arithmetic only (`ExportedProgram.module()` compiles guards as Python)."""
    return _safe_expression(_INPUT_SIZE.sub("0", code), extra=("and", "or", "not"))


def _check_expressions(program: Any) -> None:
    """Refuse symbolic size expressions (`expr_str` anywhere in the program's JSON) that are more
    than names from `_EXPR_NAMES`, symbol names, numbers and arithmetic: `torch.export.load`
    hands them to `sympy.sympify`, which evaluates Python."""
    stack = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str" and isinstance(value, str) and not _safe_expression(value):
                    raise ProgramError(
                        f"the program holds a size expression Secateurs does not evaluate: {value[:60]!r}"
                    )
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _safe_expression(text: str, extra: tuple[str, ...] = ()) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if tok.type == tokenize.NAME and (
            tok.string in _EXPR_NAMES or tok.string in extra or _SYMBOL.fullmatch(tok.string)
        ):
            continue
        if tok.type == tokenize.STRING and _SYMBOL.fullmatch(tok.string.strip("'\"")):
            continue
        if tok.type == tokenize.OP and tok.string in _EXPR_OPS:
            continue
        return False
    return True


def check_program_ops(ep: torch.export.ExportedProgram) -> None:
    """Refuse a program whose graph calls anything but ATen/prims operators and size
    arithmetic (a crafted file could name any Python callable reachable from `torch`)."""
    for node in ep.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        t = node.target
        aten_op = isinstance(t, torch._ops.OpOverload) and t.namespace in ("aten", "prims")
        if node.op != "call_function" or not (aten_op or (callable(t) and t in _SIZE_OPS)):
            name = getattr(t, "__name__", str(t))
            raise ProgramError(f"the program calls {name!r} ({node.op}), which Secateurs does not run")


def load_program(path: str | Path, max_bytes: int | None = None) -> torch.export.ExportedProgram:
    """Load a checked `.pt2` (see `check_archive`) with `torch.export.load`; its graph may call
    only ATen operators and size arithmetic (`check_program_ops`)."""
    p = Path(path)
    if not p.is_file():
        raise PruningError(f"program file {p} does not exist")
    check_archive(p, max_bytes)
    try:
        ep = torch.export.load(p)
    except Exception as exc:  # the deserializer fails in many ways on a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProgramError(f"cannot load the program: {first}") from exc
    check_program_ops(ep)
    return ep


def _user_input(ep: torch.export.ExportedProgram) -> fx.Node:
    from torch.export.graph_signature import InputKind

    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(names) != 1:
        raise ProgramError(f"the program takes {len(names)} inputs; Secateurs prunes networks of one image batch")
    return next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == names[0])


def program_input_shape(ep: torch.export.ExportedProgram) -> tuple[int, int, int]:
    """(C, H, W) of the program's input; its batch dimension must be dynamic (a static batch
    is baked into the program's guards and reshapes, so it could neither train nor evaluate)."""
    val = _user_input(ep).meta.get("val")
    shape = tuple(val.shape) if isinstance(val, torch.Tensor) else ()
    if len(shape) != 4:
        raise ProgramError(
            f"the program's input has shape {list(shape)}; Secateurs prunes CNNs on N x C x H x W images"
        )
    if isinstance(shape[0], int):
        raise ProgramError(f"the program was exported with a static batch of {shape[0]}; export it with {EXPORT_CALL}")
    example = getattr(ep, "example_inputs", None)
    dims: list[int] = []
    for i, s in enumerate(shape[1:], start=1):
        if isinstance(s, int):
            dims.append(s)
        elif example and isinstance(example[0][0], torch.Tensor):
            dims.append(int(example[0][0].shape[i]))
        else:
            raise ProgramError("the program's channel and image sizes must be static (only the batch dynamic)")
    return dims[0], dims[1], dims[2]


MAX_OUTPUTS = 64


def _out_spec(ep: torch.export.ExportedProgram) -> Any:
    """The pytree spec of the program's outputs (a tensor, tuple, list or dict of tensors)."""
    return ep.call_spec.out_spec


def _structure(leaves: Sequence[Any], spec: Any) -> Any:
    """`leaves` arranged as the program returns its outputs (`spec`; None: one output)."""
    from torch.utils import _pytree as pytree

    if spec is None:
        return leaves[0] if len(leaves) == 1 else tuple(leaves)
    return pytree.tree_unflatten(list(leaves), spec)


def program_outputs(ep: torch.export.ExportedProgram) -> dict[str, tuple[int, ...]]:
    """Each of the program's outputs' shape without the batch, by name: one tensor is
    `"output"`, a tuple's or list's are `"0"`, `"1"`, ..., a dict's its keys (flat structures
    only, at most `MAX_OUTPUTS`; every output a batch with sizes fixed but the batch's)."""
    from torch.export.graph_signature import OutputKind

    from .tasks import output_names

    user = [s for s in ep.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    if not 1 <= len(user) <= MAX_OUTPUTS:
        raise ProgramError(f"the program returns {len(user)} outputs; Secateurs takes 1 to {MAX_OUTPUTS}")
    out = next(n for n in ep.graph.nodes if n.op == "output")
    by_name = {a.name: a for a in out.args[0] if isinstance(a, fx.Node)}
    vals: list[Any] = []
    for spec in user:
        node = by_name.get(getattr(spec.arg, "name", ""))
        val = node.meta.get("val") if node is not None else None
        if not isinstance(val, torch.Tensor) or val.dim() < 2:
            raise ProgramError("the program's outputs must be batches of tensors")
        if any(not isinstance(d, int) for d in val.shape[1:]):
            raise ProgramError("the program's output size depends on its input size; export it with a fixed image size")
        vals.append(tuple(int(d) for d in val.shape[1:]))
    spec = _out_spec(ep)
    flat = spec is None or spec.is_leaf() or all(c.is_leaf() for c in spec.children())
    kind = None if spec is None or spec.is_leaf() else spec.type
    if not flat or not (kind is None or (isinstance(kind, type) and issubclass(kind, (tuple, list, dict)))):
        raise ProgramError("the program's outputs must be a tensor, or a flat tuple, list or dict of tensors")
    if isinstance(kind, type) and issubclass(kind, dict) and not all(isinstance(k, str) and k for k in spec.context):
        raise ProgramError("a program's dict output needs non-empty string keys")
    names = output_names(_structure([torch.zeros(()) for _ in vals], spec))
    if len(set(names)) != len(names) or len(names) != len(vals):
        raise ProgramError("the program's outputs need distinct names")
    return dict(zip(names, vals, strict=True))


def program_output_shape(ep: torch.export.ExportedProgram) -> tuple[int, ...]:
    """The program's first output's shape without the batch (e.g. `(10,)` for ten classes)."""
    return next(iter(program_outputs(ep).values()))


# ---------------------------------------------------------------------------------------------
# Conversion


@dataclass(frozen=True)
class _Param:
    """A program input that is a parameter, buffer or constant: its name in the user's network."""

    fqn: str
    kind: str  # "parameter" | "buffer"


def _module_path(fqn: str) -> str:
    return fqn.rpartition(".")[0]


def _pair(v: Any) -> tuple[int, int]:
    t = _ints(v)
    return (t[0], t[1])


def _ints(v: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


class _Converter:
    """One conversion of an exported program (see `convert_program`)."""

    def __init__(self, ep: torch.export.ExportedProgram) -> None:
        from torch.export.graph_signature import InputKind

        self.ep = ep
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.attrs: dict[str, fx.Node] = {}
        self.modules: dict[str, tuple[nn.Module, tuple[Any, ...]]] = {}
        self.layers: dict[str, str] = {}
        self.notes: list[str] = []
        self.tensors: dict[str, torch.Tensor] = {}
        state = ep.state_dict
        constants = getattr(ep, "constants", {}) or {}
        self.specs: dict[str, _Param] = {}
        for spec in ep.graph_signature.input_specs:
            name = spec.arg.name if hasattr(spec.arg, "name") else None
            if spec.kind == InputKind.USER_INPUT or name is None:
                continue
            target = spec.target or name
            if spec.kind == InputKind.PARAMETER:
                self.specs[name] = _Param(target, "parameter")
                self.tensors[target] = state[target]
            elif spec.kind == InputKind.BUFFER:
                self.specs[name] = _Param(target, "buffer")
                self.tensors[target] = state[target] if target in state else constants[target]
            elif spec.kind == InputKind.CONSTANT_TENSOR:
                self.specs[name] = _Param(target, "buffer")
                self.tensors[target] = constants[target]
            else:
                raise ProgramError(
                    f"the program takes a {spec.kind.name.lower()} input, which Secateurs cannot convert"
                )

    # -- values ------------------------------------------------------------------------------

    def tensor(self, ref: Any) -> torch.Tensor | None:
        return self.tensors[ref.fqn].detach() if isinstance(ref, _Param) else None

    def lookup(self, n: fx.Node) -> Any:
        """The new graph's value for an old node; a weight used by a graph op becomes a get_attr."""
        v = self.env[n]
        if isinstance(v, _Param):
            return self.attr(v)
        if isinstance(v, tuple):
            raise ProgramError(f"op {n.name} returns several values that the converted layer does not give")
        return v

    def attr(self, ref: _Param) -> fx.Node:
        """A get_attr node for a weight used outside a converted layer (a layer scale, a
        positional table), registered on the root under its flattened name."""
        if ref.fqn not in self.attrs:
            name = re.sub(r"\W", "_", ref.fqn)
            while hasattr(self.root, name):
                name += "_"
            t = self.tensors[ref.fqn]
            if ref.kind == "parameter":
                self.root.register_parameter(name, nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad))
            else:
                self.root.register_buffer(name, t.detach().clone())
            self.attrs[ref.fqn] = self.graph.get_attr(name)
        return self.attrs[ref.fqn]

    # -- modules -----------------------------------------------------------------------------

    def place(self, name: str, make: Callable[[], nn.Module], key: tuple[Any, ...]) -> str:
        """Put a new module at `name` (the user's module path), or reuse the one already there
        when the same weights are called again with the same settings."""
        if name in self.modules:
            module, old_key = self.modules[name]
            if old_key != key:
                raise ProgramError(f"layer {name!r} is called twice with different settings; Secateurs cannot cut it")
            return name
        if not name:
            name = "layer"
        taken = {n for n, _ in self.root.named_modules()}
        base, i = name, 1
        while name in taken and name not in self.modules:
            name, i = f"{base}_{i}", i + 1
        module = make()
        parent = self.root
        *path, leaf = name.split(".")
        for part in path:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)
        self.modules[name] = (module, key)
        self.layers[name] = type(module).__name__
        return name

    def call(self, node: fx.Node, name: str, make: Callable[[], nn.Module], key: tuple[Any, ...], x: fx.Node) -> None:
        target = self.place(name, make, key)
        new = self.graph.call_module(target, (self.lookup(x),))
        new.meta = dict(node.meta)
        self.env[node] = new

    def weights(self, a: dict[str, Any], *names: str) -> list[_Param | None] | None:
        """The named weight arguments if each is a parameter/buffer input (or absent), else None."""
        refs: list[_Param | None] = []
        for name in names:
            v = a.get(name)
            if v is None:
                refs.append(None)
            elif isinstance(v, fx.Node) and isinstance(self.env.get(v), _Param):
                refs.append(self.env[v])
            else:
                return None
        return refs

    # -- ops ---------------------------------------------------------------------------------

    def convert_conv(self, node: fx.Node, a: dict[str, Any]) -> bool:
        t = node.target
        if t not in (aten.conv2d.default, aten.conv2d.padding, aten.convolution.default, aten.conv_transpose2d.input):
            return False
        refs = self.weights(a, "weight", "bias")
        if refs is None or refs[0] is None or refs[0].kind != "parameter":
            return False
        w_ref = refs[0]
        w, b = self.tensor(w_ref), self.tensor(refs[1])
        assert w is not None
        if w.dim() != 4:
            return False
        transposed = t == aten.conv_transpose2d.input or bool(a.get("transposed"))
        groups, k = int(a["groups"]), (int(w.shape[2]), int(w.shape[3]))
        stride, dil = _pair(a["stride"]), _pair(a["dilation"])
        pad: Any = a["padding"] if isinstance(a["padding"], str) else _pair(a["padding"])
        if transposed:
            opad = _pair(a["output_padding"])
            in_ch, out_ch = w.shape[0], w.shape[1] * groups

            def make() -> nn.Module:
                m = nn.ConvTranspose2d(in_ch, out_ch, k, stride, pad, opad, groups, b is not None, dil)
                _load(m, w, b)
                return m

            key: tuple[Any, ...] = ("convT", stride, pad, opad, groups, dil)
        else:
            in_ch, out_ch = w.shape[1] * groups, w.shape[0]

            def make() -> nn.Module:
                m = nn.Conv2d(in_ch, out_ch, k, stride, pad, dil, groups, b is not None)
                _load(m, w, b)
                return m

            key = ("conv", stride, pad, groups, dil)
        self.call(node, _module_path(w_ref.fqn), make, key, a["input"])
        return True

    def convert_linear(self, node: fx.Node, a: dict[str, Any]) -> bool:
        if node.target != aten.linear.default:
            return False
        refs = self.weights(a, "weight", "bias")
        if refs is None or refs[0] is None or refs[0].kind != "parameter":
            return False
        w, b = self.tensor(refs[0]), self.tensor(refs[1])
        assert w is not None
        if w.dim() != 2:
            return False

        def make() -> nn.Module:
            m = nn.Linear(w.shape[1], w.shape[0], b is not None)
            _load(m, w, b)
            return m

        self.call(node, _module_path(refs[0].fqn), make, ("linear",), a["input"])
        return True

    def convert_batch_norm(self, node: fx.Node, a: dict[str, Any]) -> bool:
        t = node.target
        if t not in (
            aten.batch_norm.default,
            aten._native_batch_norm_legit_no_training.default,
            aten._native_batch_norm_legit_functional.default,
            aten._native_batch_norm_legit.default,
        ):
            return False
        if t == aten._native_batch_norm_legit.default and "running_mean" not in a:
            return False
        refs = self.weights(a, "weight", "bias", "running_mean", "running_var")
        if refs is None:
            return False
        w_ref, _, m_ref, _ = refs
        w, b, mean, var = (self.tensor(r) for r in refs)
        x_val = a["input"].meta.get("val") if isinstance(a["input"], fx.Node) else None
        ndim = x_val.dim() if isinstance(x_val, torch.Tensor) else 0
        anchor = w_ref or m_ref
        if anchor is None or ndim not in (2, 3, 4) or (w is None) != (b is None) or (mean is None) != (var is None):
            return False
        ref = w if w is not None else mean
        assert ref is not None
        channels, eps, momentum = ref.shape[0], float(a["eps"]), float(a["momentum"])
        cls: type[nn.Module] = nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d

        def make() -> nn.Module:
            m = cls(channels, eps=eps, momentum=momentum, affine=w is not None, track_running_stats=mean is not None)
            state = {"weight": w, "bias": b, "running_mean": mean, "running_var": var}
            m.load_state_dict({k: v for k, v in state.items() if v is not None}, strict=False)
            return m

        self.call(node, _module_path(anchor.fqn), make, ("bn", eps), a["input"])
        if t != aten.batch_norm.default:  # these return (out, statistics...): only out is given
            self.env[node] = (self.env[node],)
        return True

    def convert_norm(self, node: fx.Node, a: dict[str, Any]) -> bool:
        t = node.target
        if t not in (aten.layer_norm.default, aten.group_norm.default, aten.prelu.default):
            return False
        refs = self.weights(a, "weight", "bias") if t != aten.prelu.default else self.weights(a, "weight")
        if refs is None or refs[0] is None or refs[0].kind != "parameter":
            return False
        w = self.tensor(refs[0])
        b = self.tensor(refs[1]) if len(refs) > 1 else None
        assert w is not None
        if t == aten.layer_norm.default:
            shape, eps = _ints(a["normalized_shape"], 1), float(a["eps"])
            if tuple(w.shape) != shape:
                return False

            def make() -> nn.Module:
                m = nn.LayerNorm(list(shape), eps=eps, bias=b is not None)
                _load(m, w, b)
                return m

            key: tuple[Any, ...] = ("ln", shape, eps)
        elif t == aten.group_norm.default:
            groups, eps = int(a["num_groups"]), float(a["eps"])
            if b is None or w.dim() != 1:
                return False

            def make() -> nn.Module:
                m = nn.GroupNorm(groups, w.shape[0], eps=eps)
                _load(m, w, b)
                return m

            key = ("gn", groups, eps)
        else:
            if w.dim() != 1:
                return False

            def make() -> nn.Module:
                m = nn.PReLU(w.numel())
                _load(m, w, None)
                return m

            key = ("prelu",)
        self.call(node, _module_path(refs[0].fqn), make, key, a["input"] if "input" in a else a["self"])
        return True

    def convert_dropout(self, node: fx.Node, a: dict[str, Any]) -> bool:
        if node.target not in (aten.dropout.default, aten.feature_dropout.default):
            return False
        p = float(a["p"])
        cls = nn.Dropout if node.target == aten.dropout.default else nn.Dropout2d
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        self.call(node, path or "dropout", lambda: cls(p), ("dropout", p), a["input"])
        return True

    # -- shapes ------------------------------------------------------------------------------

    def sizes(self, x: fx.Node, dims: Sequence[int]) -> Any:
        """A graph value for the product of `x`'s sizes along `dims` at run time (`x.size(d)`
        calls, which TorchScript tracing, hence the ONNX export, records as sizes, not constants)."""
        out: Any = None
        for d in dims:
            s = self.graph.call_method("size", (self.lookup(x), d))
            out = s if out is None else self.graph.call_function(operator.mul, (out, s))
        return 1 if out is None else out

    def follow_shape(self, node: fx.Node) -> bool:
        """Copy a view/reshape/expand/split so its channel-count arguments follow the input (as a
        method call; see `_RESHAPES`)."""
        t, a = node.target, list[Any](node.args)
        x = a[0] if a and isinstance(a[0], fx.Node) else None
        x_val = x.meta.get("val") if x is not None else None
        if x is None or not isinstance(x_val, torch.Tensor):
            return False
        in_shape = list(x_val.shape)
        if t in _RESHAPES:
            out_val = node.meta.get("val")
            target = (
                _view_target(in_shape, list(a[1]), list(out_val.shape)) if isinstance(out_val, torch.Tensor) else None
            )
            if target is None:
                self.notes.append(f"{node.name}: reshape {list(a[1])} kept as exported")
            args = [self.lookup(v) if isinstance(v, fx.Node) else v for v in a[1]]
            for k, dims, divisor in target or []:
                size = self.sizes(x, dims)
                args[k] = self.graph.call_function(operator.floordiv, (size, divisor)) if divisor != 1 else size
            new = self.graph.call_method(_RESHAPES[t], (self.lookup(x), args))
        elif t == aten.expand.default:
            sizes = list(a[1])
            off = len(sizes) - len(in_shape)
            args = [
                -1
                if isinstance(s, int) and k >= off and s != 1 and s == in_shape[k - off]
                else (self.lookup(s) if isinstance(s, fx.Node) else s)
                for k, s in enumerate(sizes)
            ]
            new = self.graph.call_method("expand", (self.lookup(x), args))
        elif t in (aten.split.Tensor, aten.split_with_sizes.default):
            dim = a[2] if len(a) > 2 else 0
            total = in_shape[dim]
            sizes = [a[1]] if t == aten.split.Tensor else list(a[1])
            if not (isinstance(total, int) and all(isinstance(s, int) for s in sizes)):
                return False
            if t == aten.split.Tensor:
                if total % sizes[0]:
                    return False
                chunks = total // sizes[0]
            else:
                if len(set(sizes)) != 1:
                    self.notes.append(f"{node.name}: split into unequal parts {sizes} kept as exported")
                    return False
                chunks = len(sizes)
            new = self.graph.call_function(aten.chunk.default, (self.lookup(x), chunks, dim))
        else:
            return False
        new.meta = dict(node.meta)
        self.env[node] = new
        return True

    # -- driver ------------------------------------------------------------------------------

    def run(self) -> fx.GraphModule:
        from torch.export.graph_signature import OutputKind

        user_input = _user_input(self.ep)
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node is user_input:
                    ph = self.graph.placeholder("x")
                    ph.meta = dict(node.meta)
                    self.env[node] = ph
                else:
                    self.env[node] = self.specs[node.name]
            elif node.op == "call_function":
                if node.target is operator.getitem and isinstance(self.env.get(node.args[0]), tuple):
                    outs = self.env[node.args[0]]
                    if node.args[1] < len(outs):
                        self.env[node] = outs[node.args[1]]
                    else:
                        self.env[node] = _DROPPED
                    continue
                if node.target == aten.sym_size.int:  # as a method call, which tracers record (ONNX)
                    new = self.graph.call_method("size", (self.lookup(node.args[0]), node.args[1]))
                    new.meta = dict(node.meta)
                    self.env[node] = new
                    continue
                a = _named_args(node)
                converted = a is not None and (
                    self.convert_conv(node, a)
                    or self.convert_linear(node, a)
                    or self.convert_batch_norm(node, a)
                    or self.convert_norm(node, a)
                    or self.convert_dropout(node, a)
                    or self.follow_shape(node)
                )
                if not converted:
                    if any(self.env.get(n) is _DROPPED for n in node.all_input_nodes):
                        raise ProgramError(
                            f"op {node.name} uses batch-norm statistics the converted layer does not give"
                        )
                    new = self.graph.node_copy(node, self.lookup)
                    self.env[node] = new
            elif node.op == "output":
                user = {s.arg.name for s in self.ep.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT}
                outs = [self.lookup(n) for n in node.args[0] if isinstance(n, fx.Node) and n.name in user]
                self.graph.output(_structure(outs, _out_spec(self.ep)))  # the program's own structure
            else:
                raise ProgramError(f"the program has a {node.op} node ({node.name}), which Secateurs cannot convert")
        gm = fx.GraphModule(self.root, self.graph, class_name="ConvertedProgram")
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
        return gm.eval()


_DROPPED = object()
# Shape ops rebuilt as Tensor method calls: TorchScript tracing (the ONNX export) records the
# sizes given to a method as sizes, but bakes those given to an ATen overload in as constants.
_RESHAPES: dict[Any, str] = {
    aten.view.default: "view",
    aten.reshape.default: "reshape",
    aten._unsafe_view.default: "reshape",
}


def _named_args(node: fx.Node) -> dict[str, Any] | None:
    """An ATen call's arguments by schema name, defaults filled in (None for other targets)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return None
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def _load(m: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> None:
    """Copy a converted layer's weight (and bias) into its new module."""
    m.load_state_dict({"weight": w} if b is None else {"weight": w, "bias": b}, strict=False)


def _view_target(
    in_shape: list[Any], target: list[Any], out_shape: list[Any]
) -> list[tuple[int, list[int], int]] | None:
    """How each static size (other than 1 and -1) in a view's target follows its input: a list of
    (target position, input dims whose product it is, a constant divisor). Input and output are
    matched in groups of equal products; in a group that splits one input dim into several
    target sizes, every size but the last stays constant (e.g. the group count of a channel
    shuffle) and the last takes the rest. None when the shapes do not line up (symbolic sizes
    mixed into products)."""
    if len(target) != len(out_shape):
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and j < len(out_shape):
            a, b = in_shape[i], out_shape[j]
            if not isinstance(a, int) or not isinstance(b, int):
                if str(a) != str(b):
                    return None
                groups.append(([i], [j]))
                i, j = i + 1, j + 1
                continue
            gi, gj, pa, pb = [i], [j], a, b
            while pa != pb:
                if pa < pb and i + 1 < len(in_shape) and isinstance(in_shape[i + 1], int):
                    i += 1
                    gi.append(i)
                    pa *= in_shape[i]
                elif pb < pa and j + 1 < len(out_shape) and isinstance(out_shape[j + 1], int):
                    j += 1
                    gj.append(j)
                    pb *= out_shape[j]
                else:
                    return None
            groups.append((gi, gj))
            i, j = i + 1, j + 1
        elif i < len(in_shape) and in_shape[i] == 1:
            groups[-1][0].append(i) if groups else groups.append(([i], []))
            i += 1
        elif j < len(out_shape) and out_shape[j] == 1:
            groups[-1][1].append(j) if groups else groups.append(([], [j]))
            j += 1
        else:
            return None
    rewrites: list[tuple[int, list[int], int]] = []
    for gi, gj in groups:
        static = [k for k in gj if isinstance(target[k], int) and target[k] not in (1, -1)]
        if not static or any(not isinstance(target[k], int) for k in gj) or any(target[k] == -1 for k in gj):
            continue
        last = static[-1]
        divisor = 1
        for k in static[:-1]:
            divisor *= int(target[k])
        rewrites.append((last, gi, divisor))
    return rewrites


def convert_program(ep: torch.export.ExportedProgram) -> tuple[fx.GraphModule, dict[str, str], list[str]]:
    """The program as a plain `torch.fx.GraphModule` in eval mode (see the module docstring),
    the converted layers (user's name -> module type) and notes on shape arguments kept as
    exported (their channel groups may need pinning)."""
    conv = _Converter(ep)
    module = conv.run()
    return module, conv.layers, conv.notes


def _program_runner(ep: torch.export.ExportedProgram) -> Callable[[torch.Tensor], Any]:
    """Run the program's own graph on one input (its weights passed as the lifted inputs they
    are), without `ExportedProgram.module()`, which would compile the file's guard code."""
    from torch.export.graph_signature import InputKind, OutputKind

    state, constants = ep.state_dict, getattr(ep, "constants", {}) or {}
    specs = ep.graph_signature.input_specs
    user = [i for i, s in enumerate(ep.graph_signature.output_specs) if s.kind == OutputKind.USER_OUTPUT]

    def value(spec: Any) -> Any:
        target = spec.target
        if spec.kind == InputKind.PARAMETER:
            return state[target]
        return state[target] if target in state else constants[target]

    def run(x: torch.Tensor) -> Any:
        args = [x if s.kind == InputKind.USER_INPUT else value(s) for s in specs]
        out = ep.graph_module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return _structure([outs[i] for i in user], _out_spec(ep))

    return run


def verify_conversion(
    ep: torch.export.ExportedProgram,
    module: nn.Module,
    input_shape: Sequence[int],
    batches: Sequence[int] = (2, 3),
    atol: float = VERIFY_ATOL,
    seed: int = 0,
) -> float:
    """Largest absolute difference between the program and the converted module on random
    batches (eval mode), over every output (`pruning.tasks.max_difference`: the same names
    and shapes, else infinitely far); above `atol` it is a refusal."""
    program = _program_runner(ep)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for n in batches:
                x = torch.randn(n, *input_shape, generator=gen)
                try:
                    want = program(x)
                except Exception as exc:  # the program's own guards, in its words
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ProgramError(
                        f"the program does not run a batch of {n}: {first}; export it with {EXPORT_CALL}"
                    ) from exc
                try:
                    got = module(x)
                except Exception as exc:  # a conversion bug must read as a refusal
                    raise ProgramError(f"the converted network fails on a batch of {n}: {exc}") from exc
                diff = max_difference(want, got)
                if diff == float("inf"):
                    raise ProgramError("the converted network's outputs do not have the program's names and shapes")
                worst = max(worst, diff)
    finally:
        module.train(was_training)
    if not worst <= atol:
        raise ProgramError(
            f"the converted network differs from the program by {worst:.3g} (more than {atol}); Secateurs refuses it"
        )
    return worst


def keep_frozen(ep: torch.export.ExportedProgram, module: nn.Module) -> list[str]:
    """Freeze (`requires_grad=False`) each of the converted module's parameters that the
    program holds as not trainable, by name: a fixed layer such as a YOLO DFL's integral conv
    must stay fixed through the fine-tune, as it did in the user's own training. Returns them."""
    frozen = {
        name
        for name in ep.graph_signature.parameters
        if isinstance(ep.state_dict.get(name), torch.Tensor) and not ep.state_dict[name].requires_grad
    }
    kept = []
    for name, param in module.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
            kept.append(name)
    return kept


def intake_program(path: str | Path, max_bytes: int | None = None) -> Intake:
    """Load, convert and verify a `.pt2` (the one call the CLI, the service and the pipeline use)."""
    ep = load_program(path, max_bytes)
    input_shape = program_input_shape(ep)
    outputs = program_outputs(ep)
    output_shape = next(iter(outputs.values()))
    try:
        module, layers, notes = convert_program(ep)
    except ProgramError:
        raise
    except Exception as exc:  # an op the converter does not expect is a refusal, not a crash
        raise ProgramError(f"cannot convert the program: {exc}") from exc
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules()):
        raise ProgramError("the program has no convolution or linear layer with parameter weights to prune")
    keep_frozen(ep, module)
    diff = verify_conversion(ep, module, input_shape)
    return Intake(module, input_shape, output_shape, layers, diff, notes, outputs)


# ---------------------------------------------------------------------------------------------
# Model references


def model_reference(text: str) -> tuple[str, str]:
    """What a `--model` value names: ("program", path) for a `.pt2` file, ("factory",
    "package.module:function") for a factory, otherwise ("zoo", name)."""
    if text.lower().endswith(".pt2"):
        return "program", text
    if ":" in text and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        return "factory", text
    return "zoo", text


def load_factory(ref: str) -> Callable[..., nn.Module]:
    """The callable named by `package.module:function` (imported on this machine)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise PruningError(f"model factory {ref!r} must read package.module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PruningError(f"cannot import {module_name!r} for model factory {ref!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PruningError(f"model factory {ref!r}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PruningError(f"model factory {ref!r} is not callable")
    return obj
