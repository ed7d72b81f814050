"""The zoo's YOLOv8-style detector (`pruning.models.yolo`): its output contract (N, 4 + K, A),
anchors level by level and row-major, the DFL decoding and the class prior; its channel groups
(C2f splits, the PAN's concats, SPPF, per-level heads) cut correctly at random rates, with the
DFL and the output convs pinned with their reasons; the exact cost model before and after a
cut; and the `.pt2` export the intake accepts. A 64 px input and tiny widths keep it quick."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from corpus import without_channels
from torch import nn

from pruning.cost import trace
from pruning.cut import cut_model, resolve_policy
from pruning.errors import PruningError
from pruning.export import export_program
from pruning.intake import intake_program
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.models import build_model
from pruning.models.yolo import BOX_PIN, CLASS_PIN, DFL_PIN, PRIOR_SIDE, STRIDES, YOLO, out_conv
from search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, K, REG_MAX = 64, 3, 4
SHAPE = (3, SIZE, SIZE)
ANCHORS = sum((SIZE // s) ** 2 for s in STRIDES)


def make() -> YOLO:
    """yolo_nano at a test width (8-64 channels), BN statistics drawn away from the identity so
    a wrong channel mapping shows in the output."""
    torch.manual_seed(0)
    model = build_model("yolo_nano", num_classes=K, width=0.25, reg_max=REG_MAX)
    assert isinstance(model, YOLO)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None
            assert m.running_var is not None
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> YOLO:
    return make()


def counted(model: nn.Module) -> dict[str, int]:
    return {
        "flops": count_flops(model, SHAPE),
        "params": count_params(model),
        "memory_bytes": peak_memory_bytes(model, SHAPE),
    }


def test_output_is_boxes_and_probabilities_per_anchor_in_the_contract_order() -> None:
    """With the head's output convs zeroed, every side's distribution is uniform (distance
    (reg_max - 1) / 2 strides) and every score is the class prior: the boxes are centred on
    the anchors, level by level (strides 8, 16, 32), row-major within a level."""
    model = make()
    with torch.no_grad():
        for branch in [*model.detect.box, *model.detect.cls]:
            out_conv(branch).weight.zero_()
        x = torch.randn(2, *SHAPE)
        out = model(x)
        model.train()
        train_out = model(x)
        model.eval()
    assert out.shape == train_out.shape == (2, 4 + K, ANCHORS)
    want_xy, want_wh, want_score = [], [], []
    for s in STRIDES:
        n = SIZE // s
        for row in range(n):
            for col in range(n):
                want_xy.append(((col + 0.5) * s, (row + 0.5) * s))
                want_wh.append((REG_MAX - 1) * s)  # both sides: (reg_max - 1) / 2 strides each
                want_score.append(1 / (1 + PRIOR_SIDE**2 / s**2 * K / 5))  # sigmoid(log(5 / K / (640 / s)^2))
    xy = torch.tensor(want_xy).T
    for b in range(2):
        torch.testing.assert_close(out[b, :2], xy)
        torch.testing.assert_close(out[b, 2], torch.tensor(want_wh, dtype=torch.float))
        torch.testing.assert_close(out[b, 3], torch.tensor(want_wh, dtype=torch.float))
        torch.testing.assert_close(out[b, 4:], torch.tensor(want_score).expand(K, -1))
    assert float(out[:, 4:].max()) < 0.01  # YOLOv8's prior: about 1% or less


def test_dfl_is_a_fixed_expectation_over_the_bins(model: YOLO) -> None:
    conv = model.detect.dfl.conv
    assert conv.weight.flatten().tolist() == list(range(REG_MAX))
    assert not conv.weight.requires_grad
    logits = torch.zeros(1, 4 * REG_MAX, 1)
    logits[0, 2, 0] = 50.0  # the first side's mass all on bin 2
    assert model.detect.dfl(logits)[0, :, 0].tolist() == pytest.approx([2.0, 1.5, 1.5, 1.5])


def test_the_detector_only_takes_sides_that_are_multiples_of_32(model: YOLO) -> None:
    with pytest.raises(PruningError, match="multiple of 32"):
        build_model("yolo_nano", input_size=48)
    with pytest.raises(PruningError, match="multiple of 32"):
        model(torch.zeros(1, 3, 48, 48))
    assert build_model("yolo_small", num_classes=2, width=0.125, input_size=96)(torch.zeros(1, 3, 96, 96)).shape == (
        1,
        6,
        (96 // 8) ** 2 + (96 // 16) ** 2 + (96 // 32) ** 2,
    )


def test_only_the_outputs_and_the_dfl_are_pinned_with_their_reasons(model: YOLO) -> None:
    """Every group cuts but the head's output convs and the DFL's fixed conv, pinned with the
    model's reasons, as the search space reports them; each C2f's split group is cut in equal
    halves, its bottlenecks' convs with it."""
    space = SearchSpace(model, SHAPE, "flops=0.5")
    reasons = {g["key"]: g["pinned_reason"] for g in space.describe()["groups"] if g["pinned_reason"]}
    layers = {layer: why for key, why in reasons.items() for layer in space.by_key[key].members}
    assert set(layers) == {"detect.dfl.conv"} | {f"detect.{b}.{i}.2" for b in ("box", "cls") for i in range(3)}
    assert DFL_PIN in layers["detect.dfl.conv"]
    assert all(BOX_PIN in layers[f"detect.box.{i}.2"] and CLASS_PIN in layers[f"detect.cls.{i}.2"] for i in range(3))
    c2f = [g for g in space.groups if g.key.endswith(".cv1.conv") and ".m." not in g.key and "stage5.2" not in g.key]
    assert len(c2f) == 8
    assert all(len(g.parts) == 2 and g.pinned is None for g in c2f)
    assert "stage3.1.m.1.cv2.conv" in space.by_key["stage3.1.cv1.conv"].part_layers  # added to the second half
    searchable = set(space.keys)
    assert {
        "stage5.2.cv1.conv",
        "top4.cv2.conv",
        "down3.conv",
        "detect.box.0.1.conv",
        "detect.cls.2.0.conv",
    } <= searchable


@pytest.mark.filterwarnings("error")  # no group may be pinned for failing its cut
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cuts_equal_the_network_without_those_channels_and_count_exactly(model: YOLO, seed: int) -> None:
    """Random rates per group (C2f split halves, PAN concats, SPPF, per-level heads): the cut
    network computes what the whole one does with those channels' inputs zeroed, the cost
    model's index-selection cut (a search's) is the same network, and the cost model predicts
    its FLOPs, parameters and memory exactly."""
    graph, costs = trace(model, SHAPE)
    assert costs.exact, costs.reason
    if seed == 0:
        assert costs.count({}) == counted(model)
    rng = random.Random(seed)
    kept = resolve_policy(graph, {g.key: rng.uniform(0.0, 0.8) for g in graph.groups})
    out = cut_model(model, kept, "l1", input_shape=SHAPE)
    assert not out.pinned
    removed = {
        g.key: sorted(set(range(g.channels)) - set(out.kept[g.key]))
        for g in graph.groups
        if len(out.kept[g.key]) < g.channels
    }
    assert len(removed) > 40
    x = torch.randn(2, *SHAPE)
    ref = without_channels(model, removed, SHAPE)
    with torch.no_grad():
        after, before = out.model(x), ref(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    fast = costs.cut(model, removed)  # the search's cut: index selection on the trace
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in out.model.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), after, atol=1e-5, rtol=1e-5)
    assert costs.count(kept) == counted(out.model)
    assert costs.flops(kept) < 0.9 * costs.full_flops


def test_exports_and_the_intake_accepts_the_program(model: YOLO, tmp_path: Path) -> None:
    """`torch.export` with a dynamic batch (no data-dependent shapes), and the `.pt2` intake
    converts and verifies it: the same (N, 4 + K, A) output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_program(model, tmp_path / "yolo.pt2", SHAPE)
        intake = intake_program(path)
    assert intake.input_shape == SHAPE
    assert intake.output_shape == (4 + K, ANCHORS)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(intake.module(x), model(x), atol=1e-4, rtol=1e-4)
    assert intake.max_diff <= 1e-4
