"""Deployment runtimes for latency (`pruning.runtime`): each runs the same network and gives the
same outputs as eager PyTorch, so a latency measured in it is the latency of this network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pruning.errors import PruningError
from pruning.measure import measure_latency
from pruning.models import build_model
from pruning.runtime import RUNTIMES, prepare

SHAPE = (1, 16, 16)
pytestmark = pytest.mark.slow  # inductor compiles for a minute on a loaded 2-core machine


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(0)
    return build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()


def _out(y) -> torch.Tensor:
    y = y[0] if isinstance(y, (list, tuple)) else y
    return torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y.detach()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_matches_eager_outputs(convnet, runtime):
    want = _out(prepare(convnet, SHAPE, "eager", batch_size=3)())
    got = _out(prepare(convnet, SHAPE, runtime, batch_size=3)())
    assert got.shape == want.shape == (3, 10)
    atol = 0.1 * float(want.abs().max()) if runtime == "onnxruntime-int8" else 1e-4  # INT8: quantized outputs
    assert torch.allclose(got.float(), want.float(), atol=atol), (got - want).abs().max()


def test_latency_in_a_runtime_is_positive_and_leaves_the_model_alone(convnet):
    before = {k: v.clone() for k, v in convnet.state_dict().items()}
    convnet.train()
    ms = measure_latency(convnet, SHAPE, runtime="onnxruntime", warmup=1, repeats=3)
    assert ms > 0
    assert convnet.training  # its mode is restored
    assert all(torch.equal(before[k], v) for k, v in convnet.state_dict().items())


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnxruntime-int8"])
def test_a_converted_program_runs_in_onnxruntime(convnet, runtime, tmp_path):
    """A `.pt2` program as the intake converts it (an fx GraphModule) is measured in ONNX
    Runtime as a zoo network is, with the same outputs (a program job's latency figures)."""
    from pruning.export import export_program
    from pruning.intake import intake_program

    module = intake_program(export_program(convnet, tmp_path / "convnet.pt2", SHAPE)).module
    want = _out(prepare(convnet, SHAPE, "eager", batch_size=3)())
    got = _out(prepare(module, SHAPE, runtime, batch_size=3)())
    atol = 0.1 * float(want.abs().max()) if runtime == "onnxruntime-int8" else 1e-4
    assert torch.allclose(got.float(), want.float(), atol=atol), (got - want).abs().max()
    assert measure_latency(module, SHAPE, runtime=runtime, warmup=1, repeats=3) > 0


def test_unknown_runtime_is_refused(convnet):
    with pytest.raises(PruningError, match="unknown runtime 'tvm'"):
        prepare(convnet, SHAPE, "tvm")  # type: ignore[arg-type]


def test_latency_table_in_onnxruntime_predicts_the_whole_network(convnet):
    from search.latency import LatencyTable
    from search.space import SearchSpace

    table = LatencyTable.for_model(convnet, SHAPE, grid=2, use_cache=False, repeats=5, runtime="onnxruntime")
    assert table.device.endswith("-onnxruntime")
    space = SearchSpace(convnet, SHAPE, "flops=0.9", latency_table=table)
    full = table.predict(space.graph, {g.key: g.channels for g in space.groups})
    quarter = table.predict(space.graph, {g.key: max(1, g.channels // 4) for g in space.groups})
    assert 0 < quarter < full


def test_latency_tables_refuse_inductor(convnet):
    from search.base import SearchError
    from search.latency import LatencyTable

    with pytest.raises(SearchError, match="onnxruntime or torchscript"):
        LatencyTable.for_model(convnet, SHAPE, use_cache=False, runtime="inductor")
