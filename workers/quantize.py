"""The job's quantization stage (`quantize: {mode: int8}`): after the export, the returned
network's `model.onnx` is statically quantized by ONNX Runtime (`pruning.quantize`) into
`model.int8.onnx`, its activation ranges calibrated on the job's own training images. Both
networks are scored on the test split by ONNX Runtime with the same score, and timed in the
same settings (batch 1, the job's thread count, interleaved runs). When INT8 loses more than
`max_drop` points, the other calibration methods are tried and the best kept; every try is an
event and a row of the summary, and a network still beyond `max_drop` carries a warning."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pruning.data import DataSplits, calibration_batches, iterate_inputs
from pruning.quantize import CALIBRATIONS, Calibration, onnx_latency, onnx_score, qdq_nodes, quantize_onnx

from .config import QuantizeSpec
from .sink import JobSink

INT8_FILE = "model.int8.onnx"
FP32_FILE = "model.onnx"
CALIBRATION_BATCH_SIZE = 64
SCORE = "accuracy"  # the job's score: top-1 accuracy on the test split, as `accuracy_after`


def calibration_order(asked: Calibration) -> list[Calibration]:
    """The asked calibration method first, then ONNX Runtime's others in a fixed order."""
    return [asked, *(c for c in CALIBRATIONS if c != asked)]


def _points(fp32: float, int8: float) -> float:
    """The accuracy INT8 loses, in percentage points (negative: it gains)."""
    return (fp32 - int8) * 100.0


def quantize_job(
    spec: QuantizeSpec,
    data: DataSplits,
    input_shape: tuple[int, int, int],
    out: Path,
    sink: JobSink,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize `out/model.onnx` into `out/model.int8.onnx` as `spec` asks (see the module
    docstring) and return the record the summary and report.json keep under `quantize`."""
    fp32 = out / FP32_FILE
    start = time.perf_counter()
    methods = calibration_order(spec.calibration)
    sink.phase("quantize", {"mode": spec.mode, "calibration": spec.calibration, "max_drop": spec.max_drop})
    batches = calibration_batches(data.train, spec.calibration_batches, CALIBRATION_BATCH_SIZE, seed)
    inputs = list(iterate_inputs(batches))
    acc_fp32 = onnx_score(fp32, data.test)
    tries: list[dict[str, Any]] = []
    best: tuple[float, Path, dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="secateurs-int8-") as tmp:
        for k, method in enumerate(methods):
            sink.progress("quantize", k / len(methods), f"INT8, {method} calibration")
            path = Path(tmp) / f"{method}.onnx"
            t0 = time.perf_counter()
            quantize_onnx(fp32, path, inputs, method)
            acc = onnx_score(path, data.test)
            row: dict[str, Any] = {
                "calibration": method,
                "accuracy_int8": acc,
                "drop_points": _points(acc_fp32, acc),
                "seconds": time.perf_counter() - t0,
            }
            tries.append(row)
            sink.event(
                "quantize",
                f"INT8 with {method} calibration: test {SCORE} {acc:.4f} against FP32 {acc_fp32:.4f} "
                f"({row['drop_points']:+.2f} points lost; at most {spec.max_drop:g} allowed)",
                {**row, "accuracy_fp32": acc_fp32, "max_drop": spec.max_drop},
            )
            if best is None or acc > best[0]:
                best = (acc, path, row)
            if row["drop_points"] <= spec.max_drop:
                break
        assert best is not None
        acc_int8, path, chosen = best
        shutil.copyfile(path, out / INT8_FILE)
    int8 = out / INT8_FILE
    drop = _points(acc_fp32, acc_int8)
    record: dict[str, Any] = {
        "mode": spec.mode,
        "format": "QDQ",
        "weights": "int8, per output channel",
        "activations": "int8",
        "calibration": chosen["calibration"],
        "calibration_asked": spec.calibration,
        "calibration_batches": len(inputs),
        "calibration_images": sum(len(x) for x in inputs),
        "score": SCORE,
        "accuracy_fp32": acc_fp32,
        "accuracy_int8": acc_int8,
        "drop_points": drop,
        "max_drop": spec.max_drop,
        "within_max_drop": drop <= spec.max_drop,
        "tries": tries,
        "qdq_nodes": qdq_nodes(int8),
        "size_bytes_fp32": fp32.stat().st_size,
        "size_bytes_int8": int8.stat().st_size,
    }
    if len(tries) > 1:
        sink.event(
            "quantize",
            f"INT8 with {spec.calibration} calibration lost {tries[0]['drop_points']:.2f} points (more than "
            f"{spec.max_drop:g}); tried {', '.join(t['calibration'] for t in tries[1:])}; kept "
            f"{chosen['calibration']} ({drop:.2f} points lost)",
            {"tries": tries, "kept": chosen["calibration"]},
        )
    if drop > spec.max_drop:
        record["warning"] = (
            f"INT8 loses {drop:.2f} {SCORE} points (FP32 {acc_fp32:.4f}, INT8 {acc_int8:.4f}) with the best of "
            f"{len(tries)} calibration methods, more than max_drop {spec.max_drop:g}: deploy model.onnx, or try "
            "more calibration batches or quantization-aware fine-tuning"
        )
        sink.event(
            "warning", record["warning"], {k: record[k] for k in ("accuracy_fp32", "accuracy_int8", "drop_points")}
        )
    sink.progress("quantize", 0.95, "latency, FP32 and INT8")
    threads = torch.get_num_threads()
    lat_fp32, lat_int8 = onnx_latency([fp32, int8], input_shape, batch_size=1, threads=threads)
    record.update(
        latency_ms_fp32=lat_fp32,
        latency_ms_int8=lat_int8,
        latency_runtime="onnxruntime",
        latency_batch_size=1,
        latency_threads=threads,
        seconds=time.perf_counter() - start,
    )
    sink.event(
        "quantize",
        f"model.int8.onnx: test {SCORE} {acc_int8:.4f} (FP32 {acc_fp32:.4f}), latency {lat_int8:.3f} ms "
        f"(FP32 {lat_fp32:.3f} ms; batch 1, onnxruntime, {threads} threads), {record['size_bytes_int8']:,} bytes "
        f"(FP32 {record['size_bytes_fp32']:,})",
        {k: v for k, v in record.items() if k != "tries"},
    )
    return record
