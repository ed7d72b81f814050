"""Checkpoints of zoo models: safetensors weights plus a small JSON sidecar (`ckpt.json` next to
`ckpt.safetensors`) naming the zoo model and its arguments, so a later command can rebuild the
model without being told its shape again. Weights are never unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .data import DataSplits
from .errors import PruningError
from .export import load_weights, save_weights
from .models import build_model

SIDECAR_FORMAT = "secateurs-ckpt/1"


def model_args(data: DataSplits, width: float = 1.0) -> dict[str, Any]:
    """Zoo arguments that fit a data set: classes, input channels and size from the data."""
    return {
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "input_size": data.input_size,
        "width": width,
    }


def sidecar_path(weights: str | Path) -> Path:
    """Where the sidecar of a weights file lives: same name, `.json` suffix."""
    return Path(weights).with_suffix(".json")


def save_checkpoint(
    model: nn.Module, path: str | Path, zoo: str, args: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write the weights as safetensors and the sidecar; returns the sidecar's path."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise PruningError(f"checkpoint {p} must end in .safetensors")
    save_weights(model, p)
    side = sidecar_path(p)
    side.write_text(json.dumps({"format": SIDECAR_FORMAT, "zoo": zoo, "args": dict(args), **(extra or {})}, indent=1))
    return side


def read_sidecar(weights: str | Path) -> dict[str, Any] | None:
    """The sidecar of a weights file, or None when there is none."""
    side = sidecar_path(weights)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise PruningError(f"checkpoint sidecar {side} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise PruningError(f"{side} is not a {SIDECAR_FORMAT} sidecar")
    return meta


def resolve_args(zoo: str, data: DataSplits, weights: str | Path | None, width: float | None = None) -> dict[str, Any]:
    """Zoo arguments for `zoo` on `data`, taking the width from the weights' sidecar when
    there is one; a sidecar for another model or another data shape is an error."""
    args = model_args(data, width if width is not None else 1.0)
    meta = read_sidecar(weights) if weights else None
    if meta is None:
        return args
    if meta.get("zoo") != zoo:
        raise PruningError(f"{weights} holds a {meta.get('zoo')!r} model, not {zoo!r}")
    saved = meta.get("args", {})
    for key in ("num_classes", "in_channels", "input_size"):
        if key in saved and saved[key] != args[key]:
            raise PruningError(f"{weights} was trained with {key}={saved[key]}, but the data set gives {args[key]}")
    if width is None and "width" in saved:
        args["width"] = saved["width"]
    return args


def load_checkpoint(zoo: str, args: dict[str, Any], weights: str | Path) -> nn.Module:
    """Build the zoo model with `args` and load `weights` into it (strictly)."""
    return load_weights(build_model(zoo, **args), weights)
