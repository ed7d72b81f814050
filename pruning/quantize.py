"""Static INT8 quantization of an exported ONNX network with ONNX Runtime's own tools
(`onnxruntime.quantization.quantize_static`: QDQ format, per-channel weights, activations
calibrated on a few batches of the training images), and the two figures that say whether it
was worth it: the INT8 network's score on a split, run by ONNX Runtime, and its latency beside
the FP32 network's, measured interleaved in one process.

Nothing here quantizes by hand: the calibration methods are ONNX Runtime's (`minmax`: the
observed range; `entropy`: the range that keeps the KL divergence of the activation histogram
smallest; `percentile`: the range that holds 99.999 % of the observed values)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import make_loader
from .errors import PruningError
from .runtime import onnx_session, time_interleaved

Calibration = Literal["minmax", "entropy", "percentile"]
CALIBRATIONS: tuple[Calibration, ...] = ("minmax", "entropy", "percentile")
INPUT = "input"  # the input name `pruning.export.export_onnx` gives


class _Batches:
    """ONNX Runtime's `CalibrationDataReader` protocol (`get_next` until None, `rewind`) over
    a fixed list of input batches; a fresh pass per calibration method."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches = batches
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT: x}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def _reader(batches: Sequence[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Batches, CalibrationDataReader):  # the library checks the base class
        pass

    return Reader(batches)


def as_arrays(batches: Iterable[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """Calibration inputs as contiguous float32 arrays (what an ONNX session takes)."""
    out = [
        np.ascontiguousarray(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b, np.float32)
        for b in batches
    ]
    if not out:
        raise PruningError("static quantization needs at least one calibration batch")
    return out


def quantize_onnx(
    fp32: str | Path,
    int8: str | Path,
    batches: Iterable[torch.Tensor | np.ndarray],
    calibration: Calibration = "minmax",
) -> Path:
    """Write `int8`: the ONNX network `fp32` statically quantized to INT8 by ONNX Runtime (QDQ
    format, signed 8-bit weights per output channel and activations, ranges calibrated on
    `batches` by `calibration`), after ONNX Runtime's pre-processing (shape inference and graph
    optimisation, which folds what can be folded before the ranges are observed)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration not in CALIBRATIONS:
        raise PruningError(f"unknown calibration {calibration!r}; one of {', '.join(CALIBRATIONS)}")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration]
    arrays = as_arrays(batches)
    out = Path(int8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="secateurs-quant-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        pre = Path(tmp) / "pre.onnx"  # the library prints its calibration steps: kept off our output
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out),
                _reader(arrays),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
            )
        except Exception as exc:  # the library's errors are long; ours is one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PruningError(f"ONNX Runtime could not quantize {Path(fp32).name} ({calibration}): {first}") from exc
    return out


def qdq_nodes(path: str | Path) -> int:
    """How many QuantizeLinear / DequantizeLinear nodes an ONNX file holds (0: not quantized)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def onnx_logits(path: str | Path, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The network's output for one batch, run by an ONNX Runtime CPU session."""
    return onnx_session(path).run(None, {INPUT: as_arrays([x])[0]})[0]


Scorer = Callable[[Any, Any], float]


def accuracy_scorer(logits: np.ndarray, labels: np.ndarray) -> float:
    """Correct top-1 predictions in a batch (summed; `onnx_score` divides by the count)."""
    return float((logits.argmax(1) == labels).sum())


def onnx_score(path: str | Path, data: Dataset, batch_size: int = 256, scorer: Scorer = accuracy_scorer) -> float:
    """The network's score on a split, run by ONNX Runtime: top-1 accuracy in [0, 1] by
    default (the score `pruning.train.evaluate` gives the PyTorch network), the mean over
    samples of any per-batch sum `scorer(logits, labels)`."""
    sess = onnx_session(path)
    total, count = 0.0, 0
    for x, y in make_loader(data, batch_size):
        logits = sess.run(None, {INPUT: as_arrays([x])[0]})[0]
        total += scorer(logits, y.numpy())
        count += len(y)
    return total / max(1, count)


def onnx_latency(
    paths: Sequence[str | Path],
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> list[float]:
    """Median latency in ms of each ONNX network on one fixed random batch, in sessions with
    the same settings (`threads` intra-op threads, torch's count by default), the networks'
    runs interleaved so that a change in the machine's load falls on all of them alike."""
    x = torch.randn(batch_size, *input_shape[-3:], generator=torch.Generator().manual_seed(0)).numpy()
    runs = []
    for p in paths:
        sess = onnx_session(p, threads)
        runs.append(lambda s=sess: s.run(None, {INPUT: x}))
    return time_interleaved(runs, warmup=warmup, repeats=repeats)
