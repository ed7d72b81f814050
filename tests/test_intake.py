"""Programs in: `.pt2` files converted to cuttable modules (exact, named as the user named them),
refused with a message when unsafe, static-batch or unconvertible; cut programs exported back
as `.pt2` that run with no Secateurs code; `--model` references and factories."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import build_model, prune
from pruning.errors import PruningError
from pruning.export import export_onnx, export_program
from pruning.graph import DependencyGraph
from pruning.intake import (
    EXPORT_CALL,
    ProgramError,
    _view_target,
    check_program_ops,
    intake_program,
    load_factory,
    model_reference,
    verify_conversion,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (3, 32, 32)
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear, nn.GroupNorm, nn.LayerNorm, nn.PReLU, nn.Dropout)


class SqueezeExcite(nn.Module):
    """Reshapes that hold a channel count: `view(b, c)`, `view(b, c, 1, 1)`, `expand_as`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 4), nn.Linear(c // 4, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        y = x.mean((2, 3)).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return x * y.expand_as(x)


class Mixed(nn.Module):
    """PReLU, GroupNorm, squeeze-excitation, a transposed conv, dropout and a flatten by `view`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16))
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU())
        self.se = SqueezeExcite(32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.block(self.stem(x)), 2)
        x = F.max_pool2d(self.up(self.se(x)), 2)
        return self.head(self.drop(x.view(x.size(0), 16 * 16 * 16)))


def _randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None
            assert m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, tuple[nn.Module, Path]]:
    """resnet20 and mobilenetv2 from the zoo and the mixed network, exported to `.pt2`."""
    root = tmp_path_factory.mktemp("programs")
    nets = {
        "resnet20": build_model("resnet20", num_classes=10, in_channels=3, width=0.5),
        "mobilenetv2": build_model("mobilenetv2", num_classes=10, in_channels=3, width=0.5),
        "mixed": Mixed(),
    }
    return {k: (_randomise_bn(m), export_program(m, root / f"{k}.pt2", SHAPE)) for k, m in nets.items()}


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "mixed"])
def test_conversion_is_exact_and_keeps_the_users_names(programs, name) -> None:
    original, path = programs[name]
    intake = intake_program(path)
    assert intake.input_shape == SHAPE
    assert intake.output_shape == (10,)
    assert intake.num_outputs == 10
    assert intake.max_diff <= 1e-5
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(intake.module(x), original(x), atol=1e-5, rtol=0)
    # every layer with parameters is a module of the same type under the user's own name
    want = {n: type(m).__name__ for n, m in original.named_modules() if isinstance(m, LAYERS)}
    assert intake.layers == want
    converted = dict(intake.module.named_modules())
    for n in want:
        for key, value in dict(original.get_submodule(n).state_dict()).items():
            assert torch.equal(converted[n].state_dict()[key], value), f"{n}.{key}"
    # the dependency graph finds the same channel groups as on the original modules
    got = [(g.key, g.channels, g.members) for g in DependencyGraph(intake.module, torch.zeros(1, *SHAPE)).groups]
    ref = [(g.key, g.channels, g.members) for g in DependencyGraph(original, torch.zeros(1, *SHAPE)).groups]
    assert got
    assert got == ref


def test_the_converted_module_trains_like_the_original(programs) -> None:
    """BatchNorm uses batch statistics and dropout drops in train mode, as in the user's network."""
    original, path = programs["mixed"]
    original = copy.deepcopy(original).train()
    module = intake_program(path).module.train()
    assert isinstance(module.get_submodule("drop"), nn.Dropout)
    bn, bn_ref = module.get_submodule("stem.1"), original.get_submodule("stem.1")
    assert isinstance(bn, nn.BatchNorm2d)
    assert isinstance(bn_ref, nn.BatchNorm2d)
    assert bn.running_mean is not None
    before = bn.running_mean.clone()
    x = torch.randn(8, *SHAPE)
    torch.manual_seed(3)
    got = module(x)
    torch.manual_seed(3)
    want = original(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.equal(bn.running_mean, before)
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)


@pytest.mark.parametrize("name", ["mixed", "mobilenetv2"])
def test_cut_program_is_exported_and_runs_without_secateurs(programs, name, tmp_path) -> None:
    """Channel counts in reshapes follow the cut; the cut `.pt2` and ONNX match the cut module, and
    the `.pt2` loads and runs in a process that imports only torch."""
    intake = intake_program(programs[name][1])
    cut = prune(intake.module, 0.5, "l1", input_shape=SHAPE).eval()
    width = lambda m: sum(c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d))  # noqa: E731
    assert width(cut) <= 0.6 * width(intake.module)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        want = cut(x)
    path = export_program(cut, tmp_path / "cut.pt2", SHAPE)
    assert export_onnx(cut, tmp_path / "cut.onnx", SHAPE) <= 1e-4
    import onnxruntime as ort  # the ONNX batch is dynamic too (traced with two, run with three)

    onnx_out = ort.InferenceSession(str(tmp_path / "cut.onnx")).run(None, {"input": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(onnx_out), want, atol=1e-4, rtol=0)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        f"ep = torch.export.load({str(path)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"torch.save(ep.module()(x), {str(tmp_path / 'y.pt')!r})\n"
        "torch.export.load\n"
        "ours = [m for m in sys.modules if m.split('.')[0] in ('pruning', 'search', 'workers', 'service')]\n"
        "assert not ours, ours\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), want, atol=1e-5, rtol=0)


def test_a_static_batch_is_refused_with_the_export_call(tmp_path) -> None:
    model = _randomise_bn(build_model("convnet", num_classes=10, in_channels=3, input_size=32))
    ep = torch.export.export(model, (torch.randn(1, *SHAPE),))
    torch.export.save(ep, tmp_path / "static.pt2")
    with pytest.raises(ProgramError, match="static batch of 1") as err:
        intake_program(tmp_path / "static.pt2")
    assert EXPORT_CALL in str(err.value)
    assert "\n" not in str(err.value)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) + y


class Vectors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _export(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> Path:
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model.eval(), args, dynamic_shapes=tuple({0: batch} for _ in args))
    torch.export.save(ep, path)
    return path


def test_programs_secateurs_cannot_prune_are_refused(tmp_path) -> None:
    two = _export(TwoInputs(), (torch.randn(2, *SHAPE), torch.randn(2, 4)), tmp_path / "two.pt2")
    with pytest.raises(ProgramError, match="takes 2 inputs"):
        intake_program(two)
    vec = _export(Vectors(), (torch.randn(2, 8),), tmp_path / "vec.pt2")
    with pytest.raises(ProgramError, match="N x C x H x W"):
        intake_program(vec)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ProgramError, match=r"not a torch\.export program"):
        intake_program(tmp_path / "junk.pt2")
    with pytest.raises(PruningError, match="does not exist"):
        intake_program(tmp_path / "missing.pt2")


def _rewrite(src: Path, dest: Path, change) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        root = zin.namelist()[0].split("/")[0]
        extra = change(f"{root}/EXTRA", None)
        if extra is not None:
            zout.writestr(f"{root}/data/weights/model.pt", extra)
    return dest


def test_archives_that_would_unpickle_are_refused_before_loading(programs, tmp_path) -> None:
    """A legacy pickled weights file or a weight marked `use_pickle` is refused by name, and the
    pickle never runs (it would create a file)."""
    src = programs["mixed"][1]
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import pickle

    payload = pickle.dumps(Evil())
    legacy = _rewrite(src, tmp_path / "legacy.pt2", lambda n, d: payload if n.endswith("EXTRA") else d)
    with pytest.raises(ProgramError, match="does not load"):
        intake_program(legacy)

    def mark_pickled(name: str, data: bytes | None) -> bytes | None:
        if data is None or not name.endswith("model_weights_config.json"):
            return data
        config = json.loads(data)
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        return json.dumps(config).encode()

    flagged = _rewrite(src, tmp_path / "flagged.pt2", mark_pickled)
    with pytest.raises(ProgramError, match="pickled"):
        intake_program(flagged)
    assert not marker.exists()


def _edit_program(src: Path, dest: Path, edit) -> Path:
    """A copy of a `.pt2` with its models/model.json changed by `edit(dict)`."""

    def change(name: str, data: bytes | None) -> bytes | None:
        if data is None or not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()

    return _rewrite(src, dest, change)


def test_programs_that_would_run_code_are_refused(programs, tmp_path) -> None:
    """Size expressions go through sympy (which evaluates Python), node targets may name any
    callable under `torch`, guard code is compiled by `ExportedProgram.module()`: each is
    checked, and nothing in the file runs (the payloads would create a file)."""
    src = programs["mixed"][1]
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def bad_expression(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["metadata"]["expr"] = {"expr_str": payload}

    def bad_target(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    def bad_guard(program: dict) -> None:
        program["guards_code"] = [payload]

    for name, edit, message in (
        ("expr", bad_expression, "size expression"),
        ("target", bad_target, "does not run|not an allowed operator"),
        ("guard", bad_guard, "guard code"),
    ):
        with pytest.raises(ProgramError, match=message):
            intake_program(_edit_program(src, tmp_path / f"{name}.pt2", edit))
    assert not marker.exists()
    # a graph that calls a Python callable the loader would have let through is refused too
    ep = torch.export.load(src)
    node = next(n for n in ep.graph.nodes if n.op == "call_function")
    node.target = os.getcwd
    with pytest.raises(ProgramError, match=r"'getcwd'.*does not run"):
        check_program_ops(ep)


def test_a_converted_module_that_differs_is_refused(programs) -> None:
    original, path = programs["mixed"]
    ep = torch.export.load(path)
    other = Mixed().eval()  # same shapes, other weights
    with pytest.raises(ProgramError, match="differs from the program"):
        verify_conversion(ep, other, SHAPE)
    assert verify_conversion(ep, original, SHAPE) == 0.0


class BatchIntoRows(nn.Module):
    """A reshape that folds the batch into rows: not a shape the converter can follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.conv(x).reshape(b * 8, h * w).mean(1)
        return self.fc(y.reshape(b, 8))


def test_a_reshape_the_converter_cannot_follow_is_kept_and_noted(tmp_path) -> None:
    intake = intake_program(_export(BatchIntoRows(), (torch.randn(2, *SHAPE),), tmp_path / "rows.pt2"))
    assert intake.max_diff <= 1e-5
    assert any("kept as exported" in note for note in intake.notes)


def test_view_targets_follow_their_input() -> None:
    # flatten to [batch, C*H*W]: the product of the input's dims 1..3
    assert _view_target(["s0", 32, 4, 4], ["b", 512], ["s0", 512]) == [(1, [1, 2, 3], 1)]
    # squeeze-excitation's view(b, c, 1, 1): c follows dim 1
    assert _view_target(["s0", 64], ["b", 64, 1, 1], ["s0", 64, 1, 1]) == [(1, [1], 1)]
    # a channel shuffle's view(b, 2, 58, h, w): the group count stays, the group width follows
    assert _view_target(["s0", 116, 8, 8], ["b", 2, 58, 8, 8], ["s0", 2, 58, 8, 8]) == [
        (2, [1], 2),
        (3, [2], 1),
        (4, [3], 1),
    ]
    # -1 already follows; symbolic sizes mixed into products are kept as exported
    assert _view_target(["s0", 32, 4, 4], ["b", -1], ["s0", 512]) == []
    assert _view_target(["s0", 32], ["x", 4], ["s1", 4]) is None


def test_model_references_and_factories() -> None:
    assert model_reference("resnet20") == ("zoo", "resnet20")
    assert model_reference("nets/My.PT2") == ("program", "nets/My.PT2")
    assert model_reference("acme.nets:resnet_se") == ("factory", "acme.nets:resnet_se")
    assert load_factory("pruning.models.resnet:resnet20") is build_model.__globals__["MODELS"].get("resnet20")
    with pytest.raises(PruningError, match="cannot import"):
        load_factory("no_such_package_xyz:f")
    with pytest.raises(PruningError, match="has no"):
        load_factory("pruning.models.resnet:nope")
