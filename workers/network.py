"""The job's network from any source the model spec names: a zoo architecture, a
`package.module:function` factory, or a torch.export program (`.pt2`, converted by
`pruning.intake` and checked against the data), and its files out: a zoo model as safetensors
+ `arch.json` (rebuilt with `pruning.export.load_model`), any other as safetensors of the
converted module + `model.pt2` (loads with `torch.export.load`, runs with no Secateurs code)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from pruning.errors import PruningError
from pruning.export import export_program, save_model, save_weights
from pruning.intake import Intake, intake_program, load_factory
from pruning.models import build_model
from pruning.tasks import OutputKey, output_key

from .config import ModelSpec

PROGRAM_FILE = "model.pt2"
STANDARD_ARGS = ("num_classes", "in_channels", "input_size", "width")


def load_intake(spec: ModelSpec) -> Intake | None:
    """The converted program of a spec that names one (None otherwise)."""
    return intake_program(spec.program) if spec.program else None


def check_program_data(
    input_shape: Sequence[int],
    outputs: Mapping[str, Sequence[int]],
    data_shape: Sequence[int],
    classes: int,
    data: str,
    task_output: OutputKey | None = None,
    labels: bool = True,
) -> None:
    """Refuse a data set whose images or classes do not fit a program's input and the output
    its task reads (`outputs`: each output's shape without the batch, by name; `task_output`
    picks one, a one-line `TaskError` when the program has no such output), naming both
    shapes. A task that reads no labels (`labels=False`) needs no class count to match."""
    c, h, w = (int(s) for s in input_shape)
    dc, dh, dw = (int(s) for s in data_shape)
    shape = outputs[output_key(list(outputs), task_output)]
    scores = int(shape[0]) if shape else 1
    if (c, h, w) != (dc, dh, dw) or (labels and scores != classes):
        raise PruningError(
            f"data set {data} gives {dc}x{dh}x{dw} images in {classes} classes, but the model takes "
            f"{c}x{h}x{w} inputs and gives {scores} outputs"
        )


def build_factory(ref: str, **kwargs: Any) -> nn.Module:
    """Call a `package.module:function` factory with the arguments it takes (the data's
    num_classes/in_channels/input_size/width are passed only where its signature names them)."""
    factory = load_factory(ref)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and k not in STANDARD_ARGS and not open_kw]
    if unknown:
        raise PruningError(f"model factory {ref!r} takes no argument(s) {', '.join(unknown)}")
    model = factory(**{k: v for k, v in kwargs.items() if v is not None and (open_kw or k in params)})
    if not isinstance(model, nn.Module):
        raise PruningError(f"model factory {ref!r} returned {type(model).__name__}, not an nn.Module")
    return model


def build_network(
    spec: ModelSpec,
    args: dict[str, Any],
    intake: Intake | None,
    data: str,
    task_output: OutputKey | None = None,
    labels: bool = True,
) -> nn.Module:
    """The job's network before any weights are loaded: the converted program (refused when
    the data does not fit it or the output its task reads, `check_program_data`), the
    factory's or the zoo's model built with `args`."""
    if intake is not None:
        shape = (args["in_channels"], args["input_size"], args["input_size"])
        classes = int(args.get("num_classes", 0))
        check_program_data(intake.input_shape, intake.outputs, shape, classes, data, task_output, labels)
        return intake.module
    if spec.factory is not None:
        return build_factory(spec.factory, **args)
    if spec.zoo is None:
        raise PruningError("model.zoo is not set: an uploaded model must be resolved to its architecture first")
    return build_model(spec.zoo, **args)


def network_name(spec: ModelSpec) -> str | None:
    """How reports name the network: the zoo name, the factory, or the program's file name."""
    return spec.zoo or spec.factory or (Path(spec.program).name if spec.program else None)


def save_network(
    model: nn.Module, out: Path, spec: ModelSpec, args: dict[str, Any], input_shape: Sequence[int]
) -> dict[str, Path]:
    """Write the returned network: a zoo model as `model.safetensors` + `arch.json`; any other
    as `model.safetensors` (the module's state under the user's layer names) + `model.pt2`."""
    if spec.zoo is not None:
        return save_model(model, out, spec.zoo, args)
    files = {"weights": save_weights(model, out / "model.safetensors")}
    files["program"] = export_program(model, out / PROGRAM_FILE, input_shape)
    return files


def layer_channels(before: nn.Module, after: nn.Module) -> dict[str, list[int]]:
    """[kept, original] output channels of every conv and linear layer, by the layer's name
    (the user's own names for a converted program)."""

    def width(m: nn.Module) -> int | None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            return int(m.out_channels)
        if isinstance(m, nn.Linear):
            return int(m.out_features)
        return None

    cut = dict(after.named_modules())
    out: dict[str, list[int]] = {}
    for name, m in before.named_modules():
        n, k = width(m), width(cut[name]) if name in cut else None
        if n is not None and k is not None:
            out[name] = [k, n]
    return out
