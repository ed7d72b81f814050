"""The corpus's detectors (tests/corpus/detectors.py: a YOLOv8 as Ultralytics writes it, an FCOS
as torchvision writes it) as users bring them: exported to `.pt2`, converted by
`pruning.intake` (every output checked), traced into channel groups, cut (a `global` search
for a FLOPs target, scored by a forward check, and seeded random per-group rates), every
output of the cut network checked, and given back as a re-exported `.pt2` (loaded with
`torch.export.load`) and as ONNX (run in onnxruntime) that compute what the cut module does.

What a detector adds to the engine's work: the output convs of every level (YOLO's box and
class convs, joined by concatenations and a reshape, and the DFL's fixed conv decoding the
boxes; FCOS's logits, box and centerness convs) are never cut; FCOS's head is one set of
weights applied to every level, so the FPN's output convs, P6 and P7 and the head's first
convs form one group, cut once; the FPN's lateral convs are tied by the top-down adds."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from corpus import DETECTORS, build, exported, finite, search_cut, shapes, without_channels
from torch import nn

from pruning.cut import cut_model, example_input
from pruning.errors import PinnedGroupWarning
from pruning.export import export_onnx, export_program
from pruning.graph import DependencyGraph
from pruning.intake import Intake, intake_program
from pruning.measure import count_flops
from pruning.tasks import named_outputs
from search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = list(DETECTORS)
OUTPUT_LAYERS = {
    "yolov8": [f"model.22.{branch}.{level}.2" for branch in ("cv2", "cv3") for level in range(3)]
    + ["model.22.dfl.conv"],
    "fcos": ["head.cls_logits", "head.bbox_reg", "head.bbox_ctrness"],
}
"""The layers whose output channels are the network's outputs."""


@pytest.fixture(scope="module")
def intakes(corpus_exports: Path) -> dict[str, Intake]:
    """Each detector's `.pt2` (exported once per run, `corpus.exported`) converted once."""
    return {name: intake_program(exported(name, corpus_exports)) for name in NAMES}


def shape_of(name: str) -> tuple[int, int, int]:
    return DETECTORS[name].input_shape


def assert_same(got: object, want: object) -> None:
    """Every output, by name, equal within 1e-4."""
    a, b = named_outputs(got), named_outputs(want)
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4, msg=lambda m, k=key: f"output {k}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_detector_program_converts_with_every_output(name: str, intakes: dict[str, Intake]) -> None:
    intake = intakes[name]
    x = torch.randn(2, *shape_of(name))
    with torch.no_grad():
        want = build(name)(x)
        assert_same(intake.module(x), want)
    assert intake.outputs == {k: tuple(v.shape[1:]) for k, v in named_outputs(want).items()}


@pytest.mark.parametrize("name", NAMES)
def test_detector_output_layers_are_in_no_channel_group(name: str, intakes: dict[str, Intake]) -> None:
    """YOLO's per-level box and class convs reach its one output through concatenations, a
    reshape and a split, and the DFL conv through the box decoding: none of them is a channel
    group's member, pinned or not (their channels are outputs, not a failure), and the DFL conv
    no group's consumer."""
    net = intakes[name].module
    graph = DependencyGraph(net, example_input(net, shape_of(name)))
    modules = dict(net.named_modules())
    assert all(isinstance(modules[layer], nn.Conv2d) for layer in OUTPUT_LAYERS[name])
    for g in graph.groups:
        assert not set(OUTPUT_LAYERS[name]) & set(g.members), g.key
    if name == "yolov8":  # the DFL's input channels are the box convs' outputs: no group's either
        assert not any("model.22.dfl.conv" in g.consumers for g in graph.groups)


def test_fcos_shared_head_and_fpn_are_one_group_each(intakes: dict[str, Intake]) -> None:
    """The shared head reads every level: the FPN's output convs, P6 and P7 are one group with
    the head's first convs as consumers, and a cut of it shrinks all of them alike; the
    lateral convs, added top-down, are another."""
    net = intakes["fcos"].module
    graph = DependencyGraph(net, example_input(net, shape_of("fcos")))
    levels = {
        "fpn.layer_blocks.0",
        "fpn.layer_blocks.1",
        "fpn.layer_blocks.2",
        "fpn.extra_blocks.p6",
        "fpn.extra_blocks.p7",
    }
    (shared,) = [g for g in graph.groups if levels & set(g.members)]
    assert set(shared.members) == levels
    assert {"head.cls_tower.0", "head.bbox_tower.0"} <= set(shared.consumers)
    (lateral,) = [g for g in graph.groups if "fpn.inner_blocks.0" in g.members]
    assert set(lateral.members) == {"fpn.inner_blocks.0", "fpn.inner_blocks.1", "fpn.inner_blocks.2"}
    assert shared.pinned is None
    assert lateral.pinned is None
    out = cut_model(net, {shared.key: 0.5, lateral.key: 0.25}, "l1", input_shape=shape_of("fcos"))
    modules = dict(out.model.named_modules())
    assert {modules[m].out_channels for m in levels} == {len(out.kept[shared.key])} == {8}
    assert modules["head.cls_tower.0"].in_channels == modules["head.bbox_tower.0"].in_channels == 8
    assert {modules[f"fpn.inner_blocks.{k}"].out_channels for k in range(3)} == {12}


def test_fcos_head_towers_are_cut_in_whole_group_norm_groups(intakes: dict[str, Intake]) -> None:
    """The towers' GroupNorm(4, 16): a group loses whole norm groups of 4 channels, by
    `cut_model` and by the search space's index-selection cut alike, and the norm as many
    groups (a 30% cut of 16 channels keeps 12, in 3 norm groups)."""
    net, shape = intakes["fcos"].module, shape_of("fcos")
    graph = DependencyGraph(net, example_input(net, shape))
    towers = [g for g in graph.groups if g.key.startswith("head.")]
    assert len(towers) == 4
    assert all(g.unit == 4 and g.pinned is None for g in towers)
    policy = {g.key: 0.3 for g in towers}
    space = SearchSpace(net, shape, "flops=0.9")
    for cut in (space.cut(policy), cut_model(net, policy, "l1", input_shape=shape).model):
        norms = [m for m in cut.modules() if isinstance(m, nn.GroupNorm)]
        assert [(m.num_channels, m.num_groups) for m in norms] == [(12, 3)] * 4
        with torch.no_grad():
            assert finite(cut(torch.randn(2, *shape)))


@pytest.mark.parametrize("name", NAMES)
def test_detector_cut_equals_the_network_without_those_channels(name: str, intakes: dict[str, Intake]) -> None:
    """Half of every group's channels: every output of the cut network is what the network
    computes with those channels' contributions removed (each consumer's columns zeroed).
    FCOS's head towers pass through GroupNorms: cut in whole norm groups, whose statistics
    stay, they are exact too."""
    net, shape = intakes[name].module, shape_of(name)
    graph = DependencyGraph(net, example_input(net, shape))
    policy = {g.key: 0.5 for g in graph.groups}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinnedGroupWarning)
        out = cut_model(net, policy, "l1", input_shape=shape)
    removed = {
        key: sorted(set(range(graph.by_key[key].channels)) - set(kept))
        for key, kept in out.kept.items()
        if key not in out.pinned and len(kept) < graph.by_key[key].channels
    }
    assert len(removed) >= 8
    x = torch.randn(3, *shape)
    ref = without_channels(net, removed, shape)
    with torch.no_grad():
        assert_same(out.model(x), ref(x))
        first = next(iter(named_outputs(out.model(x)).values()))
        assert not torch.allclose(first, next(iter(named_outputs(net(x)).values())), atol=1e-3)  # the cut shows


def random_rates(graph: DependencyGraph, seed: int) -> dict[str, float]:
    """Seeded per-group rates in [0, 0.8], pinned groups included (the engine keeps them whole)."""
    rng = random.Random(seed)
    return {g.key: round(rng.uniform(0.0, 0.8), 2) for g in graph.groups}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("setting", ["global search", "random rates"])
def test_detector_is_cut_and_exported_back(name: str, setting: str, intakes: dict[str, Intake], tmp_path: Path) -> None:
    net, shape = intakes[name].module, shape_of(name)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        original = net(x)
    graph = DependencyGraph(net, example_input(net, shape))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinnedGroupWarning)
        if setting == "global search":
            space = SearchSpace(net, shape, "flops=0.6")
            best, cut = search_cut(net, space, "global")
            kept = space.kept(best.policy)
            pinned = space.engine_pins
        else:
            policy = random_rates(graph, seed=len(name))
            out = cut_model(net, policy, "l1", input_shape=shape)
            cut, pinned = out.model, {**graph.pinned, **out.pinned}
            kept = {k: len(v) for k, v in out.kept.items()}
    for key, why in pinned.items():  # kept whole, and said so
        assert why
        assert kept[key] == graph.by_key[key].channels
    if setting == "random rates":
        warned = " ".join(str(w.message) for w in caught if issubclass(w.category, PinnedGroupWarning))
        assert all(f"channel group {key} " in warned for key in pinned)
    f0, f1 = count_flops(net, shape), count_flops(cut, shape)
    assert f1 < 0.75 * f0
    if setting == "global search":
        assert f1 <= 0.65 * f0
    with torch.no_grad():
        want = cut(x)
    assert shapes(want) == shapes(original)  # every output, by name
    assert finite(want)
    returned = torch.export.load(str(export_program(cut, tmp_path / "pruned.pt2", shape))).module()
    with torch.no_grad():
        assert_same(returned(x), want)
        assert shapes(returned(x[:1])) == {k: (1, *v[1:]) for k, v in shapes(want).items()}  # the batch stays dynamic
    assert export_onnx(cut, tmp_path / "model.onnx", shape) <= 1e-4  # every output, in onnxruntime


def test_a_layer_the_program_holds_fixed_stays_fixed_through_training_and_back(
    intakes: dict[str, Intake], tmp_path: Path
) -> None:
    """Ultralytics' DFL conv is `requires_grad_(False)` (a fixed integral over the box bins): the
    converted network keeps it frozen, so a fine-tune step moves every other weight and not this
    one, and the cut network's re-exported program holds it fixed as the user's did."""
    import copy

    net = copy.deepcopy(intakes["yolov8"].module).train()
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == ["model.22.dfl.conv.weight"]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, weight_decay=1e-4)
    out = net(torch.randn(2, *shape_of("yolov8")))
    out.square().mean().backward()
    opt.step()
    after = dict(net.named_parameters())
    assert torch.equal(after["model.22.dfl.conv.weight"], before["model.22.dfl.conv.weight"])
    assert not torch.equal(after["model.22.cv2.0.2.weight"], before["model.22.cv2.0.2.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinnedGroupWarning)
        cut = cut_model(net.eval(), 0.5, "l1", input_shape=shape_of("yolov8")).model
    assert count_flops(cut, shape_of("yolov8")) < 0.75 * count_flops(net, shape_of("yolov8"))
    program = torch.export.load(str(export_program(cut, tmp_path / "pruned.pt2", shape_of("yolov8"))))
    assert {n for n, t in program.state_dict.items() if not t.requires_grad} >= {"model.22.dfl.conv.weight"}
