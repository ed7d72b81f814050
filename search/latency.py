"""Per-layer latency lookup tables (NetAdapt, Yang et al. 2018, section 3.3): each conv and
linear layer is timed alone on the target device for a grid of input/output channel counts;
a network's latency is predicted as the sum of its layers' table entries plus a constant for
everything else (BN, activations, pooling), measured once on the full model.

Simplifications: the grid holds `grid` channel counts per dimension (NetAdapt fills every
count) and values between grid points are interpolated bilinearly. A table is built once per
(device, architecture, input shape) and cached as JSON under `$SECATEURS_CACHE_DIR/latency`
(default `~/.cache/secateurs/latency`)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning.export import architecture
from pruning.graph import DependencyGraph
from pruning.measure import measure_latency
from pruning.runtime import Runtime

from .base import SearchError


def device_name(device: torch.device) -> str:
    """A stable name for the hardware a table was measured on."""
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).replace(" ", "_")
    return f"cpu-{platform.machine()}-{platform.processor() or 'cpu'}-{torch.get_num_threads()}t".replace(" ", "_")


def cache_dir() -> Path:
    """Where latency tables are kept between runs."""
    root = os.environ.get("SECATEURS_CACHE_DIR") or Path.home() / ".cache" / "secateurs"
    return Path(root) / "latency"


def _grid(channels: int, points: int) -> list[int]:
    return sorted({max(1, round(channels * i / points)) for i in range(1, points + 1)} | {channels})


def _interp(xs: list[int], x: float) -> tuple[int, int, float]:
    """Indices of the grid points around x and the weight of the upper one."""
    if len(xs) == 1 or x <= xs[0]:
        return 0, 0, 0.0
    if x >= xs[-1]:
        return len(xs) - 1, len(xs) - 1, 0.0
    j = bisect_left(xs, x)
    i = j - 1
    return i, j, (x - xs[i]) / (xs[j] - xs[i])


def check_table_runtime(runtime: str) -> None:
    """Refuse a runtime per-layer tables cannot be measured in (inductor: a compile per layer and
    channel count), so a latency target in it is refused before any work (the job config, here)."""
    if runtime == "inductor":
        raise SearchError(
            "latency tables cannot be measured in inductor (a compile per layer and channel count "
            "takes hours); use onnxruntime or torchscript for a latency target"
        )


class LatencyTable:
    """Measured per-layer latencies of one architecture on one device (milliseconds)."""

    def __init__(self, layers: dict[str, dict[str, Any]], offset_ms: float, device: str) -> None:
        self.layers, self.offset_ms, self.device = layers, offset_ms, device

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        input_shape: Sequence[int],
        grid: int = 6,
        use_cache: bool = True,
        repeats: int = 10,
        runtime: Runtime = "eager",
    ) -> LatencyTable:
        """The table for `model` on its own device in the deployment `runtime` (each layer timed
        as that runtime runs it), from the disk cache or measured now."""
        check_table_runtime(runtime)
        device = next(model.parameters()).device
        name = device_name(device) + ("" if runtime == "eager" else f"-{runtime}")
        arch = architecture(model, "any", {})["layers"]
        key = hashlib.sha1(json.dumps([arch, list(input_shape), name, grid], sort_keys=True).encode()).hexdigest()[:20]
        path = cache_dir() / f"{key}.json"
        if use_cache and path.exists():
            data = json.loads(path.read_text())
            return cls(data["layers"], data["offset_ms"], data["device"])
        table = cls._measure(model, tuple(input_shape), grid, repeats, name, runtime)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"layers": table.layers, "offset_ms": table.offset_ms, "device": table.device}))
            tmp.replace(path)
        return table

    @classmethod
    def _measure(
        cls, model: nn.Module, input_shape: tuple[int, ...], grid: int, repeats: int, name: str, runtime: Runtime
    ) -> LatencyTable:
        device = next(model.parameters()).device
        graph = DependencyGraph(model, torch.zeros(1, *input_shape, device=device))
        out_of = {m: g.key for g in graph.groups for m in g.members}
        in_of = {m: g.key for g in graph.groups for m in g.consumers}
        shapes: dict[str, tuple[int, ...]] = {}
        modules = dict(model.named_modules())
        hooks = [
            m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape[1:])))
            for n, m in modules.items()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
        for h in hooks:
            h.remove()
        layers: dict[str, dict[str, Any]] = {}
        full_sum = 0.0
        for n, shape in shapes.items():
            m = modules[n]
            conv = isinstance(m, nn.Conv2d)
            cin, cout = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
            depthwise = conv and m.groups > 1 and m.groups == cin
            ins = [cin] if depthwise or n not in in_of else _grid(cin, grid)
            outs = _grid(cout, grid) if n in out_of else [cout]
            table = []
            for ci in ins:
                row = []
                for co in outs:
                    layer: nn.Module
                    if depthwise:
                        layer = nn.Conv2d(
                            co, co, m.kernel_size, m.stride, m.padding, m.dilation, co, m.bias is not None
                        )
                        shp = (co, *shape[1:])
                    elif conv:
                        layer = nn.Conv2d(ci, co, m.kernel_size, m.stride, m.padding, m.dilation, 1, m.bias is not None)
                        shp = (ci, *shape[1:])
                    else:
                        layer = nn.Linear(ci, co, m.bias is not None)
                        shp = (ci,)
                    row.append(measure_latency(layer.to(device), shp, warmup=2, repeats=repeats, runtime=runtime))
                table.append(row)
            layers[n] = {
                "in_group": None if depthwise else in_of.get(n),
                "out_group": out_of.get(n),
                "ins": ins,
                "outs": outs,
                "ms": table,
                "depthwise": depthwise,
            }
            full_sum += table[-1][-1]
        total = measure_latency(model, input_shape, repeats=max(repeats, 20), runtime=runtime)
        model.train(was_training)
        return cls(layers, max(0.0, total - full_sum), name)  # noise can make the difference negative

    def predict(self, graph: DependencyGraph, kept: Mapping[str, int]) -> float:
        """Predicted latency (ms) of the network with `kept` channels per group."""
        total = self.offset_ms
        for spec in self.layers.values():
            co = kept.get(spec["out_group"], spec["outs"][-1]) if spec["out_group"] else spec["outs"][-1]
            ci = kept.get(spec["in_group"], spec["ins"][-1]) if spec["in_group"] else spec["ins"][-1]
            i0, i1, wi = _interp(spec["ins"], ci)
            o0, o1, wo = _interp(spec["outs"], co)
            ms = spec["ms"]
            top = ms[i0][o0] * (1 - wo) + ms[i0][o1] * wo
            bottom = ms[i1][o0] * (1 - wo) + ms[i1][o1] * wo
            total += top * (1 - wi) + bottom * wi
        return float(max(total, 1e-6))
