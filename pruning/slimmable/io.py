"""Saving and loading a slimmable network (a "supernet"): `supernet.safetensors` holds the
weights and `supernet.json` the zoo model, its arguments, widths and BN kind, so loading
rebuilds it with the zoo alone and never unpickles anything. `full.safetensors` holds the
plain zoo model at the largest width (the start of an AutoSlim search)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import PruningError
from ..export import load_weights, save_weights
from ..models import build_model
from .network import SlimmableNet, calibrate_bn

SUPERNET_FORMAT = "secateurs-slimmable/1"
WEIGHTS_FILE = "supernet.safetensors"
META_FILE = "supernet.json"
FULL_FILE = "full.safetensors"


def save_supernet(
    model: SlimmableNet,
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Path:
    """Write the supernet's weights and description into `out_dir`, plus the plain model at
    its largest width (BN calibrated on `calibration` first for a universal network); returns
    the JSON's path. The network must come from the zoo (`zoo` set) so that it can be rebuilt."""
    if not model.zoo:
        raise PruningError("only slimmable zoo models can be saved (make_slimmable(..., zoo=NAME))")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.set_width(model.max_width)
    if calibration is not None and model.universal:
        calibrate_bn(model, calibration)
    save_weights(model, out / WEIGHTS_FILE)
    full = FULL_FILE if model.max_width == 1.0 else None
    if full:
        save_weights(model.to_plain(), out / full)
    meta = {
        "format": SUPERNET_FORMAT,
        **model.describe(),
        "weights": WEIGHTS_FILE,
        "full_weights": full,
        **(extra or {}),
    }
    path = out / META_FILE
    path.write_text(json.dumps(meta, indent=1))
    return path


def supernet_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The description of a saved supernet (a folder or its JSON) and the folder it lives in."""
    p = Path(path)
    meta_path = p / META_FILE if p.is_dir() else p
    if not meta_path.exists():
        raise PruningError(f"no slimmable supernet at {p} (expected {META_FILE} from `secateurs slimmable train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise PruningError(f"{meta_path} is not valid JSON: {exc}") from exc
    if meta.get("format") != SUPERNET_FORMAT:
        raise PruningError(f"{meta_path} is not a {SUPERNET_FORMAT} supernet description")
    return meta, meta_path.parent


def load_supernet(path: str | Path) -> SlimmableNet:
    """Rebuild a saved supernet (folder or JSON path) with its weights, in eval mode."""
    meta, folder = supernet_meta(path)
    model = build_model(meta["zoo"], **meta.get("args", {}))
    net = SlimmableNet(model, meta["input_shape"], meta["widths"], meta["universal"], meta["zoo"], meta.get("args", {}))
    if net.group_channels != {k: int(v) for k, v in meta.get("groups", net.group_channels).items()}:
        raise PruningError(f"{folder}: the zoo model's channel groups differ from the saved supernet's")
    load_weights(net, folder / meta.get("weights", WEIGHTS_FILE))
    return net.eval()
