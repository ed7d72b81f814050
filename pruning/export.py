"""Export: safetensors weights + an architecture JSON that rebuilds a (pruned) zoo model with
the zoo alone (no pickled modules), ONNX checked against PyTorch with onnxruntime, TorchScript.

The architecture JSON names the zoo model and its arguments, then lists the shape of every
conv, linear and BatchNorm layer; `build_from_arch` builds the full-width zoo model and swaps
in layers of the recorded shapes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import PruningError
from .models import build_model
from .tasks import named_outputs

ARCH_FORMAT = "secateurs-arch/1"


def _layer_spec(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.Conv2d):
        return {
            "type": "Conv2d",
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": list(m.padding),
            "dilation": list(m.dilation),
            "groups": m.groups,
            "bias": m.bias is not None,
        }
    if isinstance(m, nn.Linear):
        return {
            "type": "Linear",
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        }
    if isinstance(m, nn.BatchNorm2d):
        return {
            "type": "BatchNorm2d",
            "num_features": m.num_features,
            "eps": m.eps,
            "momentum": m.momentum,
            "affine": m.affine,
        }
    return None


def architecture(model: nn.Module, zoo: str, args: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description that `build_from_arch` turns back into this model."""
    layers = {name: spec for name, m in model.named_modules() if (spec := _layer_spec(m)) is not None}
    return {"format": ARCH_FORMAT, "zoo": zoo, "args": dict(args), "layers": layers}


def _make_layer(spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    if kind == "Conv2d":
        return nn.Conv2d(
            spec["in_channels"],
            spec["out_channels"],
            tuple(spec["kernel_size"]),
            tuple(spec["stride"]),
            tuple(spec["padding"]),
            tuple(spec["dilation"]),
            spec["groups"],
            spec["bias"],
        )
    if kind == "Linear":
        return nn.Linear(spec["in_features"], spec["out_features"], spec["bias"])
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(spec["num_features"], spec["eps"], spec["momentum"], spec["affine"])
    raise PruningError(f"architecture JSON has an unknown layer type {kind!r}")


def build_from_arch(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a model from an architecture JSON (weights not loaded)."""
    if arch.get("format") != ARCH_FORMAT:
        raise PruningError(f"not a {ARCH_FORMAT} architecture file")
    model = build_model(arch["zoo"], **arch.get("args", {}))
    modules = dict(model.named_modules())
    for name, spec in arch["layers"].items():
        if name not in modules:
            raise PruningError(f"architecture JSON names a layer {name!r} the zoo model {arch['zoo']} lacks")
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, attr, _make_layer(spec))
    return model


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors or a weights-only `.pt` state dict (never unpickles objects). A file
    that cannot be read or does not fit is a one-line PruningError in our words (the library's
    own multi-line text stays out of messages users see)."""
    p = Path(path)
    if not p.exists():
        raise PruningError(f"weights file {p} does not exist")
    state = _read_state(p)
    problem = state_mismatch(model, state)
    if problem:
        raise PruningError(f"weights in {p} do not fit the model: {problem}")
    model.load_state_dict(state, strict=True)
    return model


def _read_state(p: Path) -> dict[str, Any]:
    """The state dict in a safetensors or weights-only `.pt` file."""
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as exc:
            raise PruningError(f"cannot read weights from {p}: not a valid safetensors file") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes from the weights-only unpickler
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "GLOBAL" in str(exc):
            raise PruningError(
                f"cannot read weights from {p}: it holds Python objects besides tensors, which are never "
                "unpickled; save model.state_dict() with torch.save, or use safetensors"
            ) from exc
        raise PruningError(
            f"cannot read weights from {p}: not a PyTorch state dict file (torch.save(model.state_dict(), path))"
        ) from exc
    if not isinstance(state, dict):
        raise PruningError(f"cannot read weights from {p}: it does not hold a state dict")
    return state


def state_mismatch(model: nn.Module, state: dict[str, Any], shown: int = 3) -> str | None:
    """Why `state` does not fit `model` in one line (missing and unexpected keys, non-tensor
    values, shape differences; the first `shown` of each), or None when it fits."""
    own = model.state_dict()

    def some(keys: Sequence[str]) -> str:
        return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    not_tensors = [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]
    shapes = [
        f"{k} is {tuple(state[k].shape)}, the model's {tuple(own[k].shape)}"
        for k in own
        if isinstance(state.get(k), torch.Tensor) and state[k].shape != own[k].shape
    ]
    parts = [
        f"{label} {some(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("not tensors:", not_tensors),
            ("shape of", shapes),
        )
        if keys
    ]
    return "; ".join(parts) or None


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write the state dict as safetensors."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(p))
    return p


def save_model(model: nn.Module, out_dir: str | Path, zoo: str, args: dict[str, Any]) -> dict[str, Path]:
    """Write `model.safetensors` and `arch.json` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = save_weights(model, out / "model.safetensors")
    arch_path = out / "arch.json"
    arch_path.write_text(json.dumps(architecture(model, zoo, args), indent=1))
    return {"weights": weights, "arch": arch_path}


def load_model(out_dir: str | Path) -> nn.Module:
    """Rebuild a saved model from `arch.json` + `model.safetensors` (eval mode)."""
    d = Path(out_dir)
    arch_path = d / "arch.json"
    if not arch_path.exists():
        raise PruningError(f"{arch_path} does not exist")
    model = build_from_arch(json.loads(arch_path.read_text()))
    return load_weights(model, d / "model.safetensors").eval()


def onnx_output_names(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The ONNX output names of a model: `logits` for one output, else each output's name
    (`pruning.tasks.named_outputs`): a dict's keys, `output_0`, `output_1`, ... for a tuple's
    or list's positions (ONNX names cannot be bare digits)."""
    with torch.no_grad():
        outs = named_outputs(model.eval()(torch.randn(1, *input_shape[-3:], device=_device(model))))
    if list(outs) == ["output"]:
        return ["logits"]
    return [f"output_{k}" if k.isdigit() else k for k in outs]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def export_onnx(
    model: nn.Module, path: str | Path, input_shape: Sequence[int], check: bool = True, atol: float = 1e-4
) -> float:
    """Export to ONNX (dynamic batch) and, if `check`, run it in onnxruntime on a random batch;
    returns the max abs difference from PyTorch's outputs, over every output (raises if above
    `atol`). One output is named `logits`; several keep their names (`onnx_output_names`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    x = torch.randn(2, *input_shape[-3:])
    names = onnx_output_names(model, input_shape)
    torch.onnx.export(
        model,
        (x,),
        str(p),
        input_names=["input"],
        output_names=names,
        dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        dynamo=False,
    )
    if not check:
        return 0.0
    import onnxruntime as ort

    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x.numpy()}), strict=True))
    with torch.no_grad():
        want = named_outputs(model(x))
    if sorted(got) != sorted(names):
        raise PruningError(f"ONNX outputs {sorted(got)} are not the model's {names}")
    diff = max(float((torch.from_numpy(got[n]) - w).abs().max()) for n, w in zip(names, want.values(), strict=True))
    if diff > atol:
        raise PruningError(f"ONNX output differs from PyTorch by {diff:.2e} (> {atol})")
    return diff


def export_torchscript(model: nn.Module, path: str | Path, input_shape: Sequence[int]) -> Path:
    """Trace to TorchScript and save."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(model.eval().cpu(), torch.randn(1, *input_shape[-3:]), strict=False)
    traced.save(str(p))
    return p


def export_program(model: nn.Module, path: str | Path, input_shape: Sequence[int], batch: int = 2) -> Path:
    """Write `model` as a `.pt2` with a dynamic batch dimension (loads with `torch.export.load`
    and runs with no Secateurs code)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.randn(batch, *input_shape[-3:], device=device)
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(ep, str(p))
    finally:
        model.train(was_training)
    return p
