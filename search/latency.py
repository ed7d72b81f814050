"""Per-layer latency lookup tables (NetAdapt, Yang et al. 2018, section 3.3): each conv and
linear layer is timed alone on the target device for a grid of input/output channel counts;
a network's latency is predicted from the sum of its layers' table entries. NetAdapt adds that sum
to a constant for everything else; here the prediction is `scale * sum + offset`, a line through
two whole-network timings, the model's and its uniform half-width cut's (`_calibrate`), so the
full network's prediction is its measured latency and a half-width cut's is its own. The scale
matters where a layer timed alone is not the layer inside the network: each block pays a
runtime's per-call costs (ONNX Runtime's session run; in INT8, the block's own input
quantization and output dequantization, which grow with its channels) that the whole network
pays once or fuses away. Measured in `onnxruntime-int8` at 64 px on a 2-core AMD EPYC, the
scale was 0.70-0.96, and offset-only tables predicted cuts up to 0.29 of the dense latency
faster than they ran (docs/results/int8-latency.md).

Simplifications: the grid holds `grid` channel counts per dimension (NetAdapt fills every
count) and values between grid points are interpolated bilinearly. A table is built once per
(device, runtime, architecture, input shape) and cached as JSON under
`$SECATEURS_CACHE_DIR/latency` (default `~/.cache/secateurs/latency`). Each layer is timed as
the runtime runs it: in `onnxruntime-int8` a layer is exported alone and quantized to INT8 (QDQ,
per-channel, `pruning.runtime`), so the table holds INT8 kernels' latencies.

`measure_round_to` times one of the network's convolutions at 17 consecutive output widths in the
runtime and finds the widest channel multiple the runtime's kernels reward (rounding a width up
to it costs no measurable time): the default `round_to` of a latency target, cached beside the
tables (`latency/round_to/`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import warnings
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning.cut import prune
from pruning.errors import PinnedGroupWarning, PruningError
from pruning.export import architecture
from pruning.graph import DependencyGraph
from pruning.measure import measure_latency
from pruning.runtime import ONNX_RUNTIMES, Runtime, prepare, time_forward, time_interleaved, unavailable

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


CALIBRATED = "scale+offset, warm"
"""Part of a table's cache key: tables of the form `scale * sum + offset`, whole networks timed
alone and warm (older tables are measured again)."""
CALIBRATION_CUT = 0.5
"""The uniform rate of the cut a table's line is fitted through, beside the model itself."""
CALIBRATION_ROUND_TO = 8
"""The kept-width multiple of that cut: widths a latency target's search gives (`round_to`)."""
SCALE_BOUNDS = (0.25, 4.0)
"""A fitted scale outside these is timing noise, not the runtime: it is clamped."""


def _io(m: nn.Conv2d | nn.Linear) -> tuple[int, int]:
    """A conv's or linear layer's (input, output) channels."""
    return (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)


def _widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(input, output) channels of each conv and linear layer, by name."""
    return {n: _io(m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


WHOLE_NETWORK_ROUNDS = 3
"""Rounds of `_whole_network_ms`: each network timed once a round, the best round kept."""


def _whole_network_ms(
    models: Sequence[nn.Module], input_shape: Sequence[int], repeats: int, runtime: Runtime
) -> list[float]:
    """Median latency (ms) of each whole network in `runtime`, timed alone and warm as a table's
    entries are and as a deployed network runs (`measure_latency`), the networks in turn over
    `WHOLE_NETWORK_ROUNDS` rounds so a change in load falls on all alike; the best round's. (Two
    networks interleaved call by call each ran cache-cold: a 16 px mobilenetv2 1.8x slower.)"""
    best = [math.inf] * len(models)
    for _ in range(WHOLE_NETWORK_ROUNDS):
        for i, m in enumerate(models):
            best[i] = min(best[i], measure_latency(m, input_shape, repeats=repeats, runtime=runtime))
    return best


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
    channel count; a runtime this machine lacks a package for), so a latency target in it is
    refused before any work (the job config, here)."""
    if runtime == "inductor":
        raise SearchError(
            "latency tables cannot be measured in inductor (a compile per layer and channel count "
            "takes hours); use onnxruntime or torchscript for a latency target"
        )
    why = unavailable(runtime)
    if why:
        raise SearchError(why)


def table_name(device: torch.device, runtime: Runtime) -> str:
    """The name a table (and a round_to measurement) measured on `device` in `runtime` carries."""
    return device_name(device) + ("" if runtime == "eager" else f"-{runtime}")


def _key(model: nn.Module, input_shape: Sequence[int], name: str, *extra: object) -> str:
    arch = architecture(model, "any", {})["layers"]
    return hashlib.sha1(json.dumps([arch, list(input_shape), name, *extra], sort_keys=True).encode()).hexdigest()[:20]


def _write_json(path: Path, data: object) -> None:
    """Written whole, then moved in: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def layer_inputs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Each conv and linear layer's input shape (without the batch) in one forward, in order."""
    device = next(model.parameters()).device
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape[1:])))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


ROUND_STEPS = (1, 2, 4, 8, 16)
"""The channel multiples `measure_round_to` considers."""


def round_to_choice(
    widths: Sequence[int], ms: Sequence[float], tolerance: float = 0.01
) -> tuple[int, dict[str, float]]:
    """The widest step in `ROUND_STEPS` such that rounding up to it and to every smaller step
    costs at most `tolerance` of the latency, from latencies `ms` at consecutive `widths` (the
    first a multiple of 16): a step's cost is the mean, over the widths, of the extra time of the
    width rounded up to a multiple of the step, relative to the mean latency. Latency flat within
    blocks of s costs ~0 for every step up to s; latency growing smoothly with the width costs
    (s - 1) / 2 channels' worth. Every smaller step must pass too, so one lucky width (noise) does
    not pick a wide step."""
    at = dict(zip(widths, ms, strict=True))
    mean = statistics.fmean(ms)
    costs: dict[str, float] = {}
    for s in ROUND_STEPS:
        extra = [at[math.ceil(w / s) * s] - at[w] for w in widths if math.ceil(w / s) * s in at]
        costs[str(s)] = max(0.0, statistics.fmean(extra)) / mean if extra and mean > 0 else 0.0
    chosen = 1
    for s in ROUND_STEPS:
        if costs[str(s)] > tolerance:
            break
        chosen = s
    return chosen, costs


def measure_round_to(
    model: nn.Module,
    input_shape: Sequence[int],
    runtime: Runtime = "eager",
    use_cache: bool = True,
    repeats: int = 20,
    tolerance: float = 0.01,
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """What the runtime's kernels reward, measured on `model`'s convolution of median width (its
    input channels, kernel and input size kept): that conv timed alone at output widths w..w+16
    (w the width rounded down to a multiple of 16, at least 16), the widths interleaved so the
    machine's load falls on all alike, and the chosen step (`round_to_choice`). Cached beside
    the tables; returns the measurement (`layer`, `widths`, `ms`, `costs`, `round_to`)."""
    check_table_runtime(runtime)
    device = next(model.parameters()).device
    name = table_name(device, runtime)
    path = cache_dir() / "round_to" / f"{_key(model, input_shape, name, 'round_to', tolerance)}.json"
    if use_cache and path.exists():
        return dict(json.loads(path.read_text()))
    modules = dict(model.named_modules())
    convs = [
        (n, shape)
        for n, shape in layer_inputs(model, input_shape).items()
        if isinstance(modules[n], nn.Conv2d) and modules[n].groups == 1
    ]
    if not convs:
        return {"round_to": 1, "layer": None, "why": "no convolution to measure", "device": name}
    convs.sort(key=lambda c: modules[c[0]].out_channels)
    layer, shape = convs[len(convs) // 2]
    m: Any = modules[layer]  # a Conv2d (its tuple fields typed loosely by torch)
    base = max(16, m.out_channels - m.out_channels % 16)
    widths = list(range(base, base + 17))
    runs = [
        prepare(
            nn.Conv2d(m.in_channels, w, m.kernel_size, m.stride, m.padding, m.dilation, 1, m.bias is not None).to(
                device
            ),
            shape,
            runtime,
        )
        for w in widths
    ]
    if device.type == "cuda" and runtime not in ONNX_RUNTIMES:
        ms = [time_forward(r, cuda=True, warmup=3, repeats=repeats) for r in runs]
    else:
        ms = time_interleaved(runs, warmup=3, repeats=repeats, **({"clock": clock} if clock else {}))
    chosen, costs = round_to_choice(widths, ms, tolerance)
    record = {
        "round_to": chosen,
        "layer": layer,
        "in_channels": m.in_channels,
        "kernel_size": list(m.kernel_size),
        "input_size": list(shape[1:]),
        "widths": widths,
        "ms": ms,
        "costs": costs,
        "tolerance": tolerance,
        "device": name,
    }
    if use_cache:
        _write_json(path, record)
    return record


class _IntoAdd(nn.Module):
    """A layer whose output a residual add reads, timed with an add after it: in INT8 the
    quantizer leaves such an add in FP32, so ONNX Runtime runs the layer unfused (dequantize,
    FP32 conv) as in the network, where the layer alone would fuse into one INT8 kernel."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return y + y


class LatencyTable:
    """Measured per-layer latencies of one architecture on one device (milliseconds)."""

    def __init__(
        self,
        layers: dict[str, dict[str, Any]],
        offset_ms: float,
        device: str,
        scale: float = 1.0,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        self.layers, self.offset_ms, self.device = layers, offset_ms, device
        self.scale, self.calibration = scale, calibration or {}

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
        name = table_name(next(model.parameters()).device, runtime)
        path = cache_dir() / f"{_key(model, input_shape, name, grid, CALIBRATED)}.json"
        if use_cache and path.exists():
            data = json.loads(path.read_text())
            return cls(data["layers"], data["offset_ms"], data["device"], data["scale"], data["calibration"])
        table = cls._measure(model, tuple(input_shape), grid, repeats, name, runtime)
        if use_cache:
            record = {"layers": table.layers, "offset_ms": table.offset_ms, "device": table.device}
            _write_json(path, {**record, "scale": table.scale, "calibration": table.calibration})
        return table

    @classmethod
    def _measure(
        cls, model: nn.Module, input_shape: tuple[int, ...], grid: int, repeats: int, name: str, runtime: Runtime
    ) -> LatencyTable:
        device = next(model.parameters()).device
        graph = DependencyGraph(model, torch.zeros(1, *input_shape, device=device))
        out_of = {m: g.key for g in graph.groups for m in g.members}
        in_of = {m: g.key for g in graph.groups for m in g.consumers}
        channels = {g.key: g.channels for g in graph.groups}
        streams = {g.key for g in graph.groups if g.stream}
        modules = dict(model.named_modules())
        shapes = layer_inputs(model, input_shape)
        was_training = model.training
        model.eval()
        layers: dict[str, dict[str, Any]] = {}
        for n, shape in shapes.items():
            m = modules[n]
            conv = isinstance(m, nn.Conv2d)
            cin, cout = _io(m)
            depthwise = conv and m.groups > 1 and m.groups == cin
            per = 1  # input features per channel of the input group: a linear after a flatten has several
            if not conv and n in in_of and cin % channels[in_of[n]] == 0:
                per = cin // channels[in_of[n]]
            ins = [cin] if depthwise or n not in in_of else [c * per for c in _grid(cin // per, grid)]
            into_add = runtime == "onnxruntime-int8" and out_of.get(n) in streams  # see _IntoAdd
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
                    if into_add:
                        layer = _IntoAdd(layer)
                    row.append(measure_latency(layer.to(device), shp, warmup=2, repeats=repeats, runtime=runtime))
                table.append(row)
            layers[n] = {
                "in_group": None if depthwise else in_of.get(n),
                "out_group": out_of.get(n),
                "ins": ins,
                "outs": outs,
                "ms": table,
                "depthwise": depthwise,
                "in_per_channel": per,
                "into_add": into_add,
            }
        bare = cls(layers, 0.0, name)
        scale, offset, calibration = bare._calibrate(model, input_shape, max(repeats, 20), runtime)
        model.train(was_training)
        return cls(layers, offset, name, scale, calibration)

    def _calibrate(
        self, model: nn.Module, input_shape: tuple[int, ...], repeats: int, runtime: Runtime
    ) -> tuple[float, float, dict[str, Any]]:
        """The line `whole network = scale * sum of its layers' entries + offset` through two
        whole-network timings: the model and its uniform half-width cut (`CALIBRATION_CUT`),
        each timed alone over rounds (`_whole_network_ms`). Where no cut saves time to fit on
        (the engine cannot cut the model, or every group is pinned) the scale is 1 and the
        offset alone makes the model's own prediction its measured latency, the reason kept."""
        dense_sum = self._layer_sum(_widths(model))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PinnedGroupWarning)  # a pinned group stays whole here: fine
                half = prune(model, CALIBRATION_CUT, "l1", input_shape=input_shape, round_to=CALIBRATION_ROUND_TO)
        except PruningError as exc:  # no uniform cut to time: the offset alone, as NetAdapt's tables
            (dense_ms,) = _whole_network_ms([model], input_shape, repeats, runtime)
            why = f"no uniform half-width cut to fit a scale on: {exc}"
            return 1.0, dense_ms - dense_sum, {"layer_sums_ms": [dense_sum], "measured_ms": [dense_ms], "why": why}
        half_sum = self._layer_sum(_widths(half))
        dense_ms, half_ms = _whole_network_ms([model, half], input_shape, repeats, runtime)
        points = {"layer_sums_ms": [dense_sum, half_sum], "measured_ms": [dense_ms, half_ms]}
        if dense_sum - half_sum <= 1e-9 or dense_ms <= half_ms:
            return 1.0, dense_ms - dense_sum, {**points, "scale": 1.0, "why": "the cut saves no time to fit"}
        scale = min(max((dense_ms - half_ms) / (dense_sum - half_sum), SCALE_BOUNDS[0]), SCALE_BOUNDS[1])
        return scale, dense_ms - scale * dense_sum, {**points, "scale": scale}

    def _layer_sum(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """The sum of the layers' interpolated entries at (input, output) widths per layer."""
        total = 0.0
        for n, spec in self.layers.items():
            ci, co = widths.get(n, (spec["ins"][-1], spec["outs"][-1]))
            i0, i1, wi = _interp(spec["ins"], ci)
            o0, o1, wo = _interp(spec["outs"], co)
            ms = spec["ms"]
            top = ms[i0][o0] * (1 - wo) + ms[i0][o1] * wo
            bottom = ms[i1][o0] * (1 - wo) + ms[i1][o1] * wo
            total += top * (1 - wi) + bottom * wi
        return total

    def predict(self, graph: DependencyGraph, kept: Mapping[str, int]) -> float:
        """Predicted latency (ms) of the network with `kept` channels per group."""
        widths = {}
        for n, spec in self.layers.items():
            co = kept.get(spec["out_group"], spec["outs"][-1]) if spec["out_group"] else spec["outs"][-1]
            per = spec.get("in_per_channel", 1)
            ci = kept[spec["in_group"]] * per if spec["in_group"] in kept else spec["ins"][-1]
            widths[n] = (ci, co)
        return float(max(self.scale * self._layer_sum(widths) + self.offset_ms, 1e-6))
