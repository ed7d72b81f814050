"""The corpus as users bring it: every network exported to `.pt2` (dynamic batch), converted
by `pruning.intake`, cut to half its FLOPs (the `global` strategy in process, scored by a
forward check), and given back as a re-exported `.pt2` (loaded with `torch.export.load`, no
Secateurs code) and as ONNX (run in onnxruntime): both compute what the cut module computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus import CORPUS, INPUT_SHAPE, build, exported, search_cut, shapes, target

from pruning.export import export_onnx, export_program
from pruning.intake import intake_program
from pruning.measure import count_flops
from search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_program_is_cut_and_exported_back(name: str, tmp_path: Path, corpus_exports: Path) -> None:
    model = build(name)
    intake = intake_program(exported(name, corpus_exports))  # export_program(build(name)), once per run
    x = torch.randn(3, *INPUT_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(intake.module(x), model(x), atol=1e-4, rtol=1e-4)
    net = intake.module
    space = SearchSpace(net, INPUT_SHAPE, f"flops={target(name)}")
    _, cut = search_cut(net, space, "global")
    assert count_flops(cut, INPUT_SHAPE) <= (target(name) + 0.05) * count_flops(net, INPUT_SHAPE)
    returned = torch.export.load(str(export_program(cut, tmp_path / "pruned.pt2", INPUT_SHAPE))).module()
    with torch.no_grad():
        want = cut(x)
        torch.testing.assert_close(returned(x), want, atol=1e-4, rtol=1e-4)
        assert shapes(returned(x[:1])) == {k: (1, *v[1:]) for k, v in shapes(want).items()}  # the batch stays dynamic
        assert shapes(returned(x)) == shapes(model(x))  # the same outputs under the same names
    assert export_onnx(cut, tmp_path / "model.onnx", INPUT_SHAPE) <= 1e-4
