"""Counting and measuring a model: FLOPs, parameters, peak memory and latency.

Convention: FLOPs here are multiply-accumulates (MACs) of convolutions and linear layers,
counted by `torch.utils.flop_counter.FlopCounterMode` (which reports 2 FLOPs per MAC; we halve
it). BatchNorm, activations, pooling and adds are not counted, as in the pruning literature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .runtime import ONNX_RUNTIMES, Runtime, example_batch, prepare, time_forward


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a single input of shape (C, H, W)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example_batch(model, input_shape))
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm affine parameters included, buffers not)."""
    return sum(p.numel() for p in model.parameters())


def peak_memory_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Weights plus the peak activation footprint of one single-input forward.

    The activation peak is the largest sum of a leaf layer's input and output tensors: the
    memory a layer-by-layer runtime needs live at once. It is an estimate, not an allocator
    trace; it moves with channel counts exactly as the real footprint does."""
    peak = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal peak
        size = sum(t.numel() * t.element_size() for t in inputs if torch.is_tensor(t))
        if torch.is_tensor(output):
            size += output.numel() * output.element_size()
        peak = max(peak, size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_batch(model, input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(weights + peak)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    runtime: Runtime = "eager",
) -> float:
    """Median wall time of one forward in milliseconds, on the model's device, after warm-up,
    in the deployment `runtime` (`pruning.runtime`: eager, torchscript, onnxruntime, onnxruntime-int8, inductor)."""
    was_training = model.training
    run = prepare(model, input_shape, runtime, batch_size)
    cuda = runtime not in ONNX_RUNTIMES and example_batch(model, input_shape).device.type == "cuda"
    try:
        return time_forward(run, cuda=cuda, warmup=warmup, repeats=repeats)
    finally:
        model.train(was_training)


@dataclass
class ModelStats:
    """The resource figures a report shows for one model."""

    flops: int
    params: int
    memory_bytes: int
    latency_ms: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def model_stats(
    model: nn.Module,
    input_shape: Sequence[int],
    latency: bool = True,
    batch_size: int = 1,
    runtime: Runtime = "eager",
) -> ModelStats:
    """FLOPs, params, memory and (optionally) latency measured in `runtime`, in one call."""
    return ModelStats(
        flops=count_flops(model, input_shape),
        params=count_params(model),
        memory_bytes=peak_memory_bytes(model, input_shape),
        latency_ms=measure_latency(model, input_shape, batch_size, runtime=runtime) if latency else None,
    )
