"""The runtime a user deploys with, for latency: a pruned network's speed-up depends on it as
much as on its FLOPs (eager PyTorch's per-layer overhead dominates small networks at batch 1).

`prepare(model, input_shape, runtime, batch_size)` returns a zero-argument callable that runs one
forward of a fixed random batch in that runtime, built once (traced, exported or compiled) so
that timing it measures inference only:

- `eager`: the module in `torch.inference_mode()`;
- `torchscript`: `torch.jit.trace` then `torch.jit.freeze` (deprecated by PyTorch in favour
  of `torch.export`, still what many deployments run);
- `onnxruntime`: exported to ONNX (opset of `torch.onnx.export`, dynamic batch) and run by an
  onnxruntime CPU session with as many intra-op threads as torch uses;
- `onnxruntime-int8`: the same export statically quantized to INT8 by ONNX Runtime
  (`pruning.quantize.quantize_onnx`: QDQ, per-channel weights), run in the same session; the
  activation ranges are calibrated on the fixed random batch itself, which is right for timing
  (an INT8 kernel's speed does not depend on the ranges) and says nothing of its accuracy;
- `inductor`: `torch.compile(backend="inductor")` for the fixed input shape (needs a C++
  compiler on the CPU; compiling takes seconds per network).

`unavailable(runtime)` says why a runtime cannot be measured on this machine (a package missing).
"""

from __future__ import annotations

import copy
import importlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .errors import PruningError

Runtime = Literal["eager", "torchscript", "onnxruntime", "onnxruntime-int8", "inductor"]
RUNTIMES: tuple[Runtime, ...] = ("eager", "torchscript", "onnxruntime", "onnxruntime-int8", "inductor")
ONNX_RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "onnxruntime-int8")
"""The runtimes that run an ONNX export in an ONNX Runtime CPU session (whatever the model's device)."""


def unavailable(runtime: str) -> str | None:
    """Why `runtime` cannot be measured here (one line), or None when it can: ONNX Runtime (and,
    for INT8, its quantization tools and `onnx`) must be importable."""
    needs = {"onnxruntime": ("onnxruntime",), "onnxruntime-int8": ("onnxruntime", "onnxruntime.quantization", "onnx")}
    for module in needs.get(runtime, ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"{runtime} cannot be measured on this machine: {module} cannot be imported ({why})"
    return None


def example_batch(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    """A random batch on the model's device, drawn from a generator of its own (seed 0): timing or
    counting a network never moves the process's seeded stream."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    return torch.randn(batch_size, *input_shape[-3:], generator=torch.Generator().manual_seed(0)).to(device)


def prepare(
    model: nn.Module, input_shape: Sequence[int], runtime: Runtime = "eager", batch_size: int = 1
) -> Callable[[], object]:
    """A callable running one forward of `model` on a fixed batch in `runtime` (eval mode)."""
    if runtime not in RUNTIMES:
        raise PruningError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    model = model.eval()
    x = example_batch(model, input_shape, batch_size)
    if runtime == "eager":

        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run
    if runtime == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with torch.no_grad():
                scripted = torch.jit.freeze(torch.jit.trace(model, (x,), strict=False))  # dict outputs too

        def run_ts() -> object:
            with torch.inference_mode():
                return scripted(x)

        return run_ts
    if runtime == "inductor":
        compiled = torch.compile(model, backend="inductor", dynamic=False)

        def run_ind() -> object:
            with torch.inference_mode():
                return compiled(x)

        return run_ind
    why = unavailable(runtime)
    if why:
        raise PruningError(why)
    # never move the caller's model
    return _onnxruntime(copy.deepcopy(model).cpu(), x.cpu(), int8=runtime == "onnxruntime-int8")


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on an ONNX file, as every latency here is measured:
    `threads` intra-op threads (torch's count by default), one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _onnxruntime(model: nn.Module, x: torch.Tensor, int8: bool = False) -> Callable[[], object]:
    """A session on `model` exported to ONNX (statically quantized to INT8 on `x` when `int8`).
    The outputs are named (one per output the network gives): left unnamed, the exporter looks
    them up on `model.graph` as a TorchScript graph's, which a converted `.pt2` program (an fx
    GraphModule, whose `graph` is fx's) does not have."""
    from .tasks import named_outputs

    with torch.no_grad():
        names = [f"output_{k}" for k in named_outputs(model.eval()(x))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(path),
                input_names=["input"],
                output_names=names,
                dynamic_axes={"input": {0: "batch"}},
                dynamo=False,
            )
        if int8:
            from . import quantize  # it imports this module: looked up here, at call time

            path = quantize.quantize_onnx(path, Path(tmp) / "model.int8.onnx", [x])
        sess = onnx_session(path)
    feed = {"input": x.numpy()}

    def run() -> object:
        return sess.run(None, feed)

    return run


def time_forward(
    run: Callable[[], object],
    cuda: bool = False,
    warmup: int = 5,
    repeats: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median time of `run()` in milliseconds after `warmup` calls: wall time, or the CPU time
    this process spent with `clock=time.process_time` (a shared machine's load stretches wall
    time, not a single-threaded run's CPU time; only for CPU runtimes at one thread)."""
    times = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        run()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((clock() - t0) * 1000.0)
    return float(statistics.median(times))


def time_interleaved(
    runs: Sequence[Callable[[], object]],
    warmup: int = 5,
    repeats: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median time in milliseconds of each of several `run()`s, timed in turn one call at a time
    (after `warmup` rounds), so that a change in the machine's load falls on all of them alike:
    the fair way to compare two networks' latency on a shared machine."""
    times: list[list[float]] = [[] for _ in runs]
    for i in range(warmup + repeats):
        for k, run in enumerate(runs):
            t0 = clock()
            run()
            if i >= warmup:
                times[k].append((clock() - t0) * 1000.0)
    return [float(statistics.median(t)) for t in times]
