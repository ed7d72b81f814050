"""The `onnxruntime-int8` deployment runtime: a network (and every latency-table entry) is timed
as ONNX Runtime runs its export statically quantized to INT8 (QDQ), a latency target is a
fraction of the dense network's INT8 latency, the report holds the predicted and the measured
INT8 latency, `space.round_to` defaults to the step the runtime's kernels reward (measured,
cached, recorded; the user's value wins), and a runtime this machine cannot run is refused."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

import pruning.measure
import pruning.quantize
import search.latency
from pruning.models import build_model
from pruning.runtime import Runtime, prepare, unavailable
from search.latency import LatencyTable, measure_round_to, round_to_choice
from search.space import SearchSpace
from service.api import create_app
from service.config import Settings
from workers.config import JobConfig

SHAPE = (1, 16, 16)
WIDE = (1, 32, 32)  # where the convolutions, not the per-call costs, are most of the latency
INT8: Runtime = "onnxruntime-int8"
MINIMAL = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits", "input_size": 32},
    "target": {"latency": 0.8},
    "strategy": {"name": "uniform"},
}


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(0)
    return build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()


@pytest.fixture(scope="module")
def convnet32():
    torch.manual_seed(0)
    return build_model("convnet", num_classes=10, in_channels=1, input_size=32).eval()


@pytest.fixture
def quantized(monkeypatch):
    """The QDQ node count of every network `pruning.quantize.quantize_onnx` writes (the real one)."""
    counts: list[int] = []
    real = pruning.quantize.quantize_onnx

    def spy(fp32, int8, batches, calibration="minmax"):
        out = real(fp32, int8, batches, calibration)
        counts.append(pruning.quantize.qdq_nodes(out))
        return out

    monkeypatch.setattr(pruning.quantize, "quantize_onnx", spy)
    return counts


def test_int8_runs_the_network_quantized(convnet, quantized):
    want = prepare(convnet, SHAPE, "eager", batch_size=3)()
    assert isinstance(want, torch.Tensor)
    outputs = prepare(convnet, SHAPE, INT8, batch_size=3)()
    assert isinstance(outputs, list)  # an ONNX Runtime session's outputs
    got = np.asarray(outputs[0])
    assert len(quantized) == 1
    assert quantized[0] > 0  # the session runs a QDQ graph
    assert got.shape == (3, 10)
    scale = float(want.abs().max())
    assert np.abs(got - want.numpy()).max() < 0.1 * scale  # the same network, to INT8 precision
    prepare(convnet, SHAPE, "onnxruntime")
    assert len(quantized) == 1  # plain onnxruntime stays FP32


def test_int8_tables_are_measured_on_quantized_blocks(convnet32, quantized):
    table = LatencyTable.for_model(convnet32, WIDE, grid=2, use_cache=False, repeats=3, runtime=INT8)
    assert table.device.endswith("-onnxruntime-int8")
    entries = sum(len(row) for spec in table.layers.values() for row in spec["ms"])
    # every layer block, then the whole network and its half cut once a round
    assert len(quantized) == entries + 2 * search.latency.WHOLE_NETWORK_ROUNDS
    assert all(n >= 4 for n in quantized)  # each block: input, weight and output Q/DQ at least
    # the full network's prediction is its measured INT8 latency (the line's first point)
    space = SearchSpace(convnet32, WIDE, "latency=0.9", latency_table=table, runtime=INT8)
    full = table.predict(space.graph, {g.key: g.channels for g in space.groups})
    assert full == pytest.approx(table.calibration["measured_ms"][0])
    entries_sum = sum(s["ms"][-1][-1] for s in table.layers.values())
    assert full == pytest.approx(table.offset_ms + table.scale * entries_sum)
    assert space.budget == pytest.approx(0.9 * full)


def test_round_to_choice_finds_the_step_latency_is_flat_in():
    widths = list(range(32, 49))
    smooth = [1.0 + 0.05 * (w - 32) for w in widths]
    blocks16 = [1.0 if w == 32 else 2.0 for w in widths]
    blocks8 = [1.0 if w == 32 else 1.5 if w <= 40 else 2.0 for w in widths]
    assert round_to_choice(widths, smooth)[0] == 1
    assert round_to_choice(widths, blocks16)[0] == 16
    assert round_to_choice(widths, blocks8)[0] == 8
    _, costs = round_to_choice(widths, blocks8)
    assert costs["8"] == 0.0
    assert costs["16"] > 0.01


def test_round_to_is_measured_per_runtime_cached_and_the_users_wins(convnet, tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path))
    table = LatencyTable.for_model(convnet, SHAPE, grid=2, use_cache=False, repeats=3, runtime="onnxruntime")
    calls: list[str] = []
    real = search.latency.measure_round_to

    def spy(model, input_shape, runtime="eager", **kw):
        calls.append(runtime)
        return real(model, input_shape, runtime, repeats=5, **kw)

    monkeypatch.setattr("search.space.measure_round_to", spy)
    space = SearchSpace(convnet, SHAPE, "latency=0.95", latency_table=table, runtime="onnxruntime", round_to=None)
    choice = space.round_to_choice
    assert calls == ["onnxruntime"]
    assert choice["source"] == "measured in onnxruntime"
    m = choice["measurement"]
    assert len(m["widths"]) == len(m["ms"]) == 17
    assert m["widths"][0] % 16 == 0
    assert choice["narrowest_group"] == min(space.by_key[k].channels for k in space.keys)
    assert space.round_to == choice["value"] == min(choice["measured"], choice["cap"])
    assert choice["cap"] <= choice["narrowest_group"] // 2
    assert all(k % space.round_to == 0 for k in space.kept(dict.fromkeys(space.keys, 0.5)).values())
    assert space.describe()["round_to"] == choice
    cached = list((tmp_path / "latency" / "round_to").glob("*.json"))
    assert [json.loads(p.read_text())["device"] for p in cached] == [m["device"]]
    assert measure_round_to(convnet, SHAPE, "onnxruntime") == m  # read back, not measured again
    # the user's value wins, and nothing is measured for it; no latency target: 1
    given = SearchSpace(convnet, SHAPE, "latency=0.95", latency_table=table, runtime="onnxruntime", round_to=3)
    assert (given.round_to, given.round_to_choice["source"]) == (3, "given")
    flops = SearchSpace(convnet, SHAPE, "flops=0.5", runtime="onnxruntime", round_to=None)
    assert flops.round_to == 1
    assert calls == ["onnxruntime"]


@pytest.mark.slow
def test_a_latency_target_in_int8_reports_predicted_and_measured_int8_latency(tmp_path, monkeypatch, quantized):
    """A tiny job end to end: the table (two widths per dimension, three repeats, to stay quick)
    and the report's latencies are INT8 measurements."""
    from workers.pipeline import run_pipeline

    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path / "cache"))
    real_for_model = LatencyTable.for_model.__func__  # type: ignore[attr-defined]

    def small(cls, model, input_shape, grid=6, use_cache=True, repeats=10, runtime="eager"):
        return real_for_model(cls, model, input_shape, grid=2, use_cache=use_cache, repeats=3, runtime=runtime)

    monkeypatch.setattr(LatencyTable, "for_model", classmethod(small))
    dense: list[float] = []
    real_whole = search.latency._whole_network_ms

    def whole(models, shape, repeats, runtime):
        ms = real_whole(models, shape, repeats, runtime)
        dense.append(ms[0])  # the whole network (beside its half cut), measured for the table
        return ms

    monkeypatch.setattr(search.latency, "_whole_network_ms", whole)
    reported: list[tuple[str, float]] = []
    real_report = pruning.measure.measure_latency

    def report_measure(*args, **kw):
        ms = real_report(*args, **kw)
        reported.append((kw.get("runtime", "eager"), ms))
        return ms

    monkeypatch.setattr(pruning.measure, "measure_latency", report_measure)
    config = {
        **MINIMAL,
        "runtime": INT8,
        "train": {"epochs": 0.2},
        "finetune": {"max_steps": 0},
        "search": {"val_batches": 1},
        "onnx": False,
    }
    summary = run_pipeline(config, tmp_path / "job")
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    assert summary["runtime"] == INT8
    assert report["space"]["latency_table"].endswith("-onnxruntime-int8")
    # the target is a fraction of the dense network's INT8 latency
    assert len(dense) == 1
    assert report["space"]["original"]["latency_ms"] == pytest.approx(dense[0])
    assert report["budget"] == pytest.approx(0.8 * dense[0])
    # predicted beside measured, both INT8
    assert 0 < summary["latency_ms_predicted"] <= report["budget"]
    assert reported == [(INT8, summary["latency_ms_before"]), (INT8, summary["latency_ms_after"])]
    assert all(n > 0 for n in quantized)
    choice = report["space"]["round_to"]
    assert choice["source"] == "measured in onnxruntime-int8"
    assert report["config"]["space"]["round_to"] is None  # the user left it unset
    kept = summary["kept_channels"]
    assert all(v % choice["value"] == 0 or v == report["original_channels"][k] for k, v in kept.items())


@pytest.fixture
def api(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", scheduler=False))
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {app.state.store.create_token('alpha')}"}


def test_a_runtime_this_machine_cannot_run_is_refused_in_one_line(api, monkeypatch):
    client, auth = api
    assert unavailable(INT8) is None
    assert JobConfig.model_validate({**MINIMAL, "runtime": INT8, "space": {"round_to": 4}}).space.round_to == 4
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # as if it were not installed
    assert unavailable("onnxruntime") is None
    assert str(unavailable(INT8)).startswith("onnxruntime-int8 cannot be measured on this machine")
    for target in ({"latency": 0.5}, {"flops": 0.5}):  # the report's latency is measured in it either way
        r = client.post("/v1/jobs", json={**MINIMAL, "target": target, "runtime": INT8}, headers=auth)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith("runtime: onnxruntime-int8 cannot be measured on this machine"), detail
        assert "\n" not in detail
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 0
    with pytest.raises(ValidationError, match=r"onnxruntime\.quantization cannot be imported"):
        JobConfig.model_validate({**MINIMAL, "runtime": INT8})
