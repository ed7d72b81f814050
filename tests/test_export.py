"""Export: arch.json rebuilds the pruned model, ONNX matches PyTorch, TorchScript, safe loading."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from pruning import build_model, prune
from pruning.errors import PruningError
from pruning.export import export_onnx, export_torchscript, load_model, load_weights, save_model

SHAPE = (1, 16, 16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["resnet20", "mobilenetv2"])
def pruned(request):
    torch.manual_seed(0)
    args = {"num_classes": 10, "in_channels": 1, "input_size": 16}
    model = build_model(request.param, **args).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return request.param, args, prune(model, 0.4, "l1", input_shape=SHAPE).eval()


def test_arch_json_rebuilds_the_pruned_model(pruned, tmp_path) -> None:
    name, args, model = pruned
    save_model(model, tmp_path, name, args)
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch["zoo"] == name
    rebuilt = load_model(tmp_path)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_onnx_matches_pytorch(pruned, tmp_path) -> None:
    import onnxruntime as ort

    _, _, model = pruned
    diff = export_onnx(model, tmp_path / "m.onnx", SHAPE)
    assert diff < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *SHAPE)  # a batch size other than the export's: the batch axis is dynamic
    got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        assert float((got - model(x)).abs().max()) < 1e-4


def test_torchscript_matches_pytorch(pruned, tmp_path) -> None:
    _, _, model = pruned
    path = export_torchscript(model, tmp_path / "m.pt", SHAPE)
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_weights_are_never_unpickled(tmp_path) -> None:
    model = build_model("convnet", in_channels=1)
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(PruningError, match="cannot read weights"):
        load_weights(model, bad)
    with pytest.raises(PruningError, match="does not exist"):
        load_weights(model, tmp_path / "missing.safetensors")
    (tmp_path / "arch.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(PruningError, match="architecture"):
        load_model(tmp_path)
