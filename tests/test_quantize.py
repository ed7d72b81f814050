"""INT8 as a job stage: ONNX Runtime's static quantization of an exported network (QDQ nodes,
a smaller file, outputs close to FP32), the stage's fallback to the other calibration methods
when INT8 loses more than `max_drop` (every try reported, a warning when none is good
enough), a whole job on digits that hands back `model.int8.onnx` with its accuracy and latency
beside FP32's, and bad options refused in one line at submit and on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from pruning.data import calibration_batches, iterate_inputs
from pruning.errors import PruningError
from pruning.export import export_onnx
from pruning.models import build_model
from pruning.quantize import CALIBRATIONS, onnx_logits, onnx_score, qdq_nodes, quantize_onnx
from pruning.train import TrainConfig, evaluate, train
from workers import quantize as stage
from workers.config import QuantizeSpec
from workers.sink import JobSink

SHAPE = (1, 16, 16)
MINIMAL = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
}


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A convnet trained one epoch on digits and its ONNX export."""
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    train(model, digits.train, TrainConfig(epochs=1, lr=0.05, seed=0), device="cpu")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model.eval(), path, SHAPE)
    return model, path


def _inputs(digits, n: int = 4) -> list[torch.Tensor]:
    return list(iterate_inputs(calibration_batches(digits.train, n, 64, 0)))


def test_static_int8_is_smaller_has_qdq_nodes_and_keeps_the_outputs(digits, exported, tmp_path) -> None:
    model, fp32 = exported
    int8 = quantize_onnx(fp32, tmp_path / "model.int8.onnx", _inputs(digits), "minmax")
    assert qdq_nodes(fp32) == 0
    assert qdq_nodes(int8) > 0
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # 8-bit weights, not 32
    x = next(iter(torch.utils.data.DataLoader(digits.test, batch_size=128)))[0]
    want, got = onnx_logits(fp32, x), onnx_logits(int8, x)
    with torch.no_grad():
        np.testing.assert_allclose(want, model(x).numpy(), atol=1e-4)
    spread = float(want.max() - want.min())
    assert float(np.abs(got - want).max()) < 0.1 * spread
    assert float((got.argmax(1) == want.argmax(1)).mean()) >= 0.95
    # the ONNX score of the FP32 network is the PyTorch network's accuracy
    assert onnx_score(fp32, digits.test) == pytest.approx(evaluate(model, digits.test), abs=1e-9)
    assert abs(onnx_score(int8, digits.test) - onnx_score(fp32, digits.test)) < 0.03


def test_every_calibration_method_gives_an_int8_network(digits, exported, tmp_path) -> None:
    _, fp32 = exported
    for method in CALIBRATIONS:
        out = quantize_onnx(fp32, tmp_path / f"{method}.onnx", _inputs(digits, 2), method)
        assert qdq_nodes(out) > 0, method
    with pytest.raises(PruningError, match="unknown calibration"):
        quantize_onnx(fp32, tmp_path / "x.onnx", _inputs(digits, 1), "mse")  # type: ignore[arg-type]
    with pytest.raises(PruningError, match="at least one calibration batch"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [], "minmax")


class Events(JobSink):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []
        self.phases: list[str] = []

    def phase(self, name, data=None) -> None:
        self.phases.append(name)

    def event(self, kind, message, data=None) -> None:
        self.events.append((kind, message, dict(data or {})))


def _scores(monkeypatch, exported, by_method: dict[str, float]) -> None:
    """The stage's scorer, with chosen INT8 accuracies per calibration method (the FP32 score is
    the real one), so the fallback's decisions can be checked on known numbers."""
    real = stage.onnx_score

    def score(path, data):
        name = Path(path).stem
        return by_method[name] if name in by_method else real(path, data)

    monkeypatch.setattr(stage, "onnx_score", score)


def _job_dir(exported, tmp_path) -> Path:
    out = tmp_path / "job"
    out.mkdir()
    (out / "model.onnx").write_bytes(exported[1].read_bytes())
    return out


def test_a_first_calibration_within_max_drop_is_kept_without_trying_others(digits, exported, tmp_path) -> None:
    out, sink = _job_dir(exported, tmp_path), Events()
    spec = QuantizeSpec(mode="int8", calibration="percentile", calibration_batches=2, max_drop=100)
    record = stage.quantize_job(spec, digits, SHAPE, out, sink)
    assert [t["calibration"] for t in record["tries"]] == ["percentile"]
    assert record["calibration"] == "percentile"
    assert record["within_max_drop"]
    assert record["calibration_images"] == 128
    assert record["accuracy_fp32"] == onnx_score(out / "model.onnx", digits.test)
    assert record["accuracy_int8"] == onnx_score(out / "model.int8.onnx", digits.test)
    assert record["drop_points"] == pytest.approx((record["accuracy_fp32"] - record["accuracy_int8"]) * 100)
    assert record["latency_ms_fp32"] > 0
    assert record["latency_ms_int8"] > 0
    assert record["latency_batch_size"] == 1
    assert record["latency_threads"] == torch.get_num_threads()
    assert record["size_bytes_int8"] == (out / "model.int8.onnx").stat().st_size < record["size_bytes_fp32"]
    assert sink.phases == ["quantize"]
    assert "warning" not in record
    assert not [e for e in sink.events if e[0] == "warning"]
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx"]  # no scratch files left


def test_int8_beyond_max_drop_tries_the_other_calibrations_and_keeps_the_best(
    digits, exported, tmp_path, monkeypatch
) -> None:
    fp32 = onnx_score(exported[1], digits.test)
    _scores(monkeypatch, exported, {"minmax": fp32 - 0.05, "entropy": fp32 - 0.004, "percentile": fp32 - 0.02})
    out, sink = _job_dir(exported, tmp_path), Events()
    record = stage.quantize_job(QuantizeSpec(mode="int8", calibration_batches=2), digits, SHAPE, out, sink)
    # minmax loses 5 points (> 1): entropy is tried, loses 0.4 (<= 1), and the search stops there
    assert [t["calibration"] for t in record["tries"]] == ["minmax", "entropy"]
    assert [round(t["drop_points"], 6) for t in record["tries"]] == [5.0, 0.4]
    assert record["calibration"] == "entropy"
    assert record["calibration_asked"] == "minmax"
    assert record["accuracy_int8"] == fp32 - 0.004
    assert record["within_max_drop"]
    said = [e for e in sink.events if e[0] == "quantize" and "kept entropy" in e[1]]
    assert len(said) == 1
    assert "5.00 points" in said[0][1]
    assert said[0][2]["kept"] == "entropy"
    assert "warning" not in record


def test_when_no_calibration_is_good_enough_the_best_is_kept_with_a_warning(
    digits, exported, tmp_path, monkeypatch
) -> None:
    fp32 = onnx_score(exported[1], digits.test)
    _scores(monkeypatch, exported, {"minmax": fp32 - 0.3, "entropy": fp32 - 0.2, "percentile": fp32 - 0.25})
    out, sink = _job_dir(exported, tmp_path), Events()
    record = stage.quantize_job(QuantizeSpec(mode="int8", calibration_batches=1), digits, SHAPE, out, sink)
    assert [t["calibration"] for t in record["tries"]] == ["minmax", "entropy", "percentile"]
    assert record["calibration"] == "entropy"
    assert record["drop_points"] == pytest.approx(20.0)
    assert not record["within_max_drop"]
    warnings = [e for e in sink.events if e[0] == "warning"]
    assert len(warnings) == 1
    assert "20.00" in warnings[0][1]
    assert "max_drop 1" in warnings[0][1]
    assert record["warning"] == warnings[0][1]


def test_a_job_with_quantize_returns_int8_beside_fp32(tmp_path) -> None:
    from workers.pipeline import run_pipeline

    config = {
        **MINIMAL,
        "train": {"epochs": 1},
        "finetune": {"max_steps": 0},
        "search": {"val_batches": 1},
        "quantize": {"mode": "int8", "calibration_batches": 2},
    }
    summary = run_pipeline(config, tmp_path / "job")
    q = summary["quantize"]
    assert Path(summary["files"]["onnx_int8"]) == tmp_path / "job" / "model.int8.onnx"
    assert qdq_nodes(tmp_path / "job" / "model.int8.onnx") == q["qdq_nodes"] > 0
    # FP32 scored by ONNX Runtime is the job's own test accuracy; INT8 stays within max_drop
    assert q["accuracy_fp32"] == pytest.approx(summary["accuracy_after"], abs=1e-9)
    assert q["within_max_drop"]
    assert q["drop_points"] <= 1.0
    assert q["latency_ms_fp32"] > 0
    assert q["latency_ms_int8"] > 0
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    assert report["quantize"] == json.loads(json.dumps(q))
    assert report["config"]["quantize"]["mode"] == "int8"


@pytest.fixture
def api(tmp_path):
    from service.api import create_app
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}


@pytest.mark.parametrize(
    "quantize, onnx, message",
    [
        ('{"mode": "int4"}', True, "quantize.mode"),
        ('{"mode": "int8", "calibration": "mse"}', True, "quantize.calibration"),
        ('{"mode": "int8", "calibration_batches": 0}', True, "quantize.calibration_batches"),
        ('{"mode": "int8", "calibration_batches": -3}', True, "quantize.calibration_batches"),
        ('{"mode": "int8", "calibration_batches": 1000000000}', True, "quantize.calibration_batches"),
        ('{"mode": "int8", "calibration_batches": 2.5}', True, "quantize.calibration_batches"),
        ('{"mode": "int8", "max_drop": -1}', True, "quantize.max_drop"),
        ('{"mode": "int8", "max_drop": 1e999}', True, "quantize.max_drop"),
        ('{"mode": "int8", "max_drop": NaN}', True, "quantize.max_drop"),
        ('{"mode": "int8", "max_drop": "inf"}', True, "quantize.max_drop"),
        ('{"mode": "int8", "max_drop": 101}', True, "quantize.max_drop"),
        ('{"mode": "int8", "calib": 3}', True, "quantize.calib"),
        ('{"mode": "int8"}', False, "quantize needs onnx: true"),
    ],
)
def test_bad_quantize_options_are_one_line_422s_at_submit(api, quantize, onnx, message) -> None:
    client, auth = api
    body = json.dumps({**MINIMAL, "onnx": onnx})[:-1] + f', "quantize": {quantize}}}'  # raw: 1e999, NaN
    r = client.post("/v1/jobs", content=body, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert "\n" not in detail
    assert message in detail
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 0


def test_quantize_on_a_task_it_cannot_score_is_a_one_line_422(api) -> None:
    client, auth = api
    body = {**MINIMAL, "model": {"zoo": "unet"}, "data": {"name": "scenes"}, "task": "segmentation"}
    r = client.post("/v1/jobs", json={**body, "quantize": {"mode": "int8"}}, headers=auth)
    assert r.status_code == 422, r.text
    assert "INT8 is scored for classification jobs only, not task 'segmentation'" in r.json()["detail"]
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 0


def test_a_good_quantize_section_is_stored_with_its_defaults(api) -> None:
    client, auth = api
    body = {**MINIMAL, "quantize": {"mode": "int8", "calibration": "entropy", "calibration_batches": 3}}
    r = client.post("/v1/jobs", json=body, headers=auth)
    assert r.status_code == 201, r.text
    stored = {"mode": "int8", "calibration": "entropy", "calibration_batches": 3, "max_drop": 1.0}  # default filled in
    assert r.json()["spec"]["quantize"] == stored


def test_the_cli_refuses_bad_quantize_flags_with_exit_2(tmp_path, capsys) -> None:
    from secateurs import main

    base = ["search", "--model", "convnet", "--data", "digits", "--strategy", "uniform", "--target", "flops=0.5"]
    base += ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--quantize-mode", "int4"])
    assert exc.value.code == 2
    assert main([*base, "--quantize-mode", "int8", "--quantize-calibration-batches", "0"]) == 2
    assert "quantize.calibration_batches" in capsys.readouterr().err
    assert main([*base, "--quantize-mode", "int8", "--no-onnx"]) == 2
    assert "quantize needs onnx: true" in capsys.readouterr().err
