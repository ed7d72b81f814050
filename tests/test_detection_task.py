"""The detection task: box ops and NMS against brute-force references, decoding per layout and
box format with one-line refusals, COCO mAP on hand-made cases, the labelled loss fitting a tiny
anchor-free detector on synthetic boxes, distillation, and the job config's refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pruning.detection import PAD, pad_targets
from pruning.detection.decode import Detections, anchor_count, detections, split_output
from pruning.detection.loss import anchor_centres, distillation_loss, labelled_loss
from pruning.detection.metrics import GroundTruth, coco_map
from pruning.detection.ops import (
    batched_nms,
    box_iou,
    ciou,
    cxcywh_to_xyxy,
    giou,
    nms,
    xyxy_to_cxcywh,
)
from pruning.tasks import Score, TaskError, make_task

SIZE = 32
STRIDES = (8, 16)
K = 2


class TinyDetector(nn.Module):
    """An anchor-free detector obeying the output contract: two levels (strides 8 and 16), per
    anchor `[cx, cy, w, h]` in input pixels then K sigmoid scores, `(N, 4+K, A)`."""

    def __init__(self, num_classes: int = K, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.SiLU(), nn.Conv2d(width, width, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.SiLU(),
        )  # fmt: skip
        self.down = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.SiLU())
        self.heads = nn.ModuleList(nn.Conv2d(width, 4 + num_classes, 1) for _ in STRIDES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.stem(x)
        outs = []
        for f, head, s in zip((f8, self.down(f8)), self.heads, STRIDES, strict=True):
            o = head(f)
            _n, _, h, w = o.shape
            ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
            cx, cy = (xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s
            o = o.flatten(2)
            ltrb = nn.functional.softplus(o[:, :4]) * s
            x1, y1, x2, y2 = cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]
            box = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), 1)
            outs.append(torch.cat((box, o[:, 4:].sigmoid()), 1))
        return torch.cat(outs, 2)


def scenes(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images with one or two filled squares each (class 0 red, class 1 green) and their
    targets `(n, 2, 5)`."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, SIZE, SIZE)
    rows = []
    for i in range(n):
        objs = []
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            c = int(torch.randint(0, K, (1,), generator=g))
            side = int(torch.randint(8, 15, (1,), generator=g))
            x, y = (int(v) for v in torch.randint(0, SIZE - side, (2,), generator=g))
            images[i, c, y : y + side, x : x + side] = 1.0
            objs.append(torch.tensor([c, x, y, x + side, y + side], dtype=torch.float32))
        rows.append(torch.stack(objs))
    return images, pad_targets(rows, 2)


def brute_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """NMS by its definition: visit by decreasing score, keep a box unless a kept one overlaps it."""
    iou = box_iou(boxes, boxes).tolist()
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda j: -float(scores[j])):
        if all(iou[i][k] <= thr for k in kept):
            kept.append(i)
    return kept


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    return torch.cat((xy, xy + wh), 1)


# ---------------------------------------------------------------- ops


def test_box_formats_round_trip_and_iou_matches_its_definition() -> None:
    b = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25]])
    assert torch.allclose(xyxy_to_cxcywh(b), torch.tensor([[5.0, 5, 10, 10], [10, 15, 10, 20]]))
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    # overlap [5,10]x[5,10] = 25; union 100 + 200 - 25
    assert torch.allclose(box_iou(b, b), torch.tensor([[1.0, 25 / 275], [25 / 275, 1.0]]))
    assert float(box_iou(b[:1], torch.tensor([[20.0, 20, 30, 30]]))[0, 0]) == 0.0


def test_giou_and_ciou_are_one_for_equal_boxes_and_penalise_distance() -> None:
    a = torch.tensor([[0.0, 0, 10, 10]])
    far = torch.tensor([[20.0, 0, 30, 10]])
    assert torch.allclose(giou(a, a), torch.ones(1))
    assert torch.allclose(ciou(a, a), torch.ones(1), atol=1e-6)
    # disjoint: IoU 0, enclosing box 30x10, union 200: GIoU = -(300 - 200) / 300
    assert math.isclose(float(giou(a, far)), -1 / 3, rel_tol=1e-5)
    # CIoU: centres 20 apart, enclosing diagonal^2 = 30^2 + 10^2, equal aspect ratios
    assert math.isclose(float(ciou(a, far)), -400 / 1000, rel_tol=1e-5)


def test_nms_keeps_what_the_brute_force_definition_keeps() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        boxes = random_boxes(40, g)
        scores = torch.rand(40, generator=g)
        thr = [0.3, 0.5, 0.7][trial % 3]
        assert nms(boxes, scores, thr).tolist() == brute_nms(boxes, scores, thr)


def test_class_wise_nms_never_suppresses_across_classes() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert sorted(batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist()) == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [0]


# ---------------------------------------------------------------- decode


def test_decode_reads_each_layout_and_box_format_the_same() -> None:
    box = torch.tensor([[5.0, 5, 10, 10]])  # cxcywh, = xyxy [0, 0, 10, 10]
    raw = torch.cat((box, torch.tensor([[0.1, 0.9]])), 1)[None]  # (1, A=1, 4+K)
    want = torch.tensor([[[0.0, 0, 10, 10]]])
    d1 = split_output(raw.transpose(1, 2), "(N,4+K,A)", "cxcywh", num_classes=2)
    d2 = split_output(raw, "(N,A,4+K)", "cxcywh", num_classes=2)
    d3 = split_output(torch.cat((want, raw[..., 4:]), 2), "(N,A,4+K)", "xyxy")
    for d in (d1, d2, d3):
        assert torch.allclose(d.boxes, want)
        assert torch.allclose(d.probabilities, torch.tensor([[[0.1, 0.9]]]))
    logits = split_output(raw, "(N,A,4+K)", scores="logits")
    assert torch.allclose(logits.probabilities, torch.tensor([[[0.1, 0.9]]]).sigmoid())


@pytest.mark.parametrize(
    "shape, kw, words",
    [
        ((2, 6), {}, "must be a 3-D tensor"),
        ((1, 7, 20), {"num_classes": 2}, "7 rows per anchor (4+K, K = 3), but the data has 2 classes"),
        ((1, 20, 6), {"num_classes": 2}, "give task option layout: '(N,A,4+K)'"),
        ((1, 20, 6), {"num_anchors": 20}, "give task option layout: '(N,A,4+K)'"),
        ((1, 4, 20), {}, "4 rows per anchor"),
    ],
)
def test_decode_refuses_an_output_off_the_declared_layout_in_one_line(shape, kw, words) -> None:
    with pytest.raises(TaskError) as err:
        split_output(torch.zeros(shape), "(N,4+K,A)", **kw)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_detections_threshold_nms_and_cap() -> None:
    # three anchors: two overlapping boxes of class 1, one far box of class 0 under the threshold
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [30, 30, 40, 40]]])
    probs = torch.tensor([[[0.0, 0.9], [0.0, 0.8], [0.05, 0.0]]])
    from pruning.detection.decode import Decoded

    d = Decoded(boxes, probs, logits=False)
    (one,) = detections(d, conf_threshold=0.1, iou_threshold=0.5)
    assert one.classes.tolist() == [1]
    assert one.scores.tolist() == pytest.approx([0.9])
    (two,) = detections(d, conf_threshold=0.01, iou_threshold=0.9)
    assert two.classes.tolist() == [1, 1, 0]
    (capped,) = detections(d, conf_threshold=0.01, iou_threshold=0.9, max_detections=2)
    assert capped.scores.tolist() == pytest.approx([0.9, 0.8])


def test_anchor_count_and_centres_follow_the_yolo_head() -> None:
    assert anchor_count((8, 16, 32), 640) == 8400
    c = anchor_centres((8, 16), 32)
    assert c.shape == (16 + 4, 2)
    assert c[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]]
    assert c[16].tolist() == [8.0, 8.0]
    assert anchor_count(STRIDES, SIZE) == TinyDetector()(torch.zeros(1, 3, SIZE, SIZE)).shape[2]


# ---------------------------------------------------------------- mAP


def _dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(torch.tensor(boxes).reshape(-1, 4), torch.tensor(scores), torch.tensor(classes, dtype=torch.long))


def test_map_is_cocos_on_known_cases() -> None:
    gt = GroundTruth(torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), torch.tensor([0, 1]))
    perfect = coco_map([_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])], [gt])
    assert perfect.map == pytest.approx(1.0)
    assert perfect.map50 == pytest.approx(1.0)
    assert perfect.per_class == pytest.approx({0: 1.0, 1: 1.0})
    # class 1's box at IoU 0.72 (20x20 vs 20x14.4 inside it) matches at 0.50..0.70: 5 of 10 thresholds
    shifted = coco_map([_dets([[0, 0, 10, 10], [20, 20, 40, 34.4]], [0.9, 0.8], [0, 1])], [gt])
    assert shifted.per_class == pytest.approx({0: 1.0, 1: 0.5})
    assert shifted.map == pytest.approx(0.75)
    assert shifted.map50 == pytest.approx(1.0)
    # a wrong class scores nothing; no detections score 0
    assert coco_map([_dets([[0, 0, 10, 10]], [0.9], [1])], [GroundTruth(gt.boxes[:1], gt.classes[:1])]).map == 0.0
    assert coco_map([_dets([], [], [])], [gt]).map == 0.0
    # a higher-scored false positive before the true one: precision 1/2 at recall 1 -> AP 0.5
    fp_first = coco_map(
        [_dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.5], [0, 0])], [GroundTruth(gt.boxes[:1], gt.classes[:1])]
    )
    assert fp_first.map == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------- losses and the task


def test_the_labelled_loss_fits_a_tiny_detector() -> None:
    torch.manual_seed(0)
    images, targets = scenes(8)
    model = TinyDetector()
    task = make_task("detection", strides=list(STRIDES), loss="labels", num_classes=K)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = task.batch((images, targets))

    def scored() -> Score:
        metric = task.metric()
        with torch.no_grad():
            metric.update(task.forward(model, x), y)
        return metric.compute()

    before = scored()
    losses = []
    for _ in range(60):
        loss = task.loss(task.forward(model, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0]
    score = scored()
    assert score.name == "map"
    assert score.extras["map50"] > 0.4
    assert before.extras["map50"] < 0.1
    assert score.value > 0.2 > before.value
    assert set(score.extras) == {"map50", "ap_0", "ap_1"}


def test_distillation_loss_is_zero_for_the_teacher_itself_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    images, _ = scenes(4)
    teacher, student = TinyDetector(), TinyDetector()
    task = make_task("detection", teacher=teacher, strides=list(STRIDES))
    x, y = task.batch((images, torch.zeros(4, 1, 5)))
    with torch.no_grad():
        assert float(task.loss(task.forward(teacher, x), y)) == pytest.approx(0.0, abs=1e-5)
        assert float(task.loss(task.forward(student, x), y)) > 0.01
        d = task.decode(teacher(x))
        assert float(distillation_loss(d, d)) == pytest.approx(0.0, abs=1e-5)
        assert float(task.kd_loss(student(x), teacher(x), 4.0)) > 0.01


def test_without_labels_the_teacher_is_the_reference() -> None:
    torch.manual_seed(0)
    images, targets = scenes(6)
    teacher = TinyDetector().eval()  # untrained: its scores (about 0.5) still give it detections
    task = make_task("detection", teacher=teacher, labels=False, strides=list(STRIDES))
    x, y = task.batch((images, targets))
    assert y.boxes is None  # the data's boxes are not read
    metric = task.metric()
    with torch.no_grad():
        metric.update(task.forward(teacher, x), y)
    assert metric.compute().value == pytest.approx(1.0)
    alone = make_task("detection", labels=False)
    x, y = alone.batch((images, targets))
    with pytest.raises(TaskError, match="needs the unpruned detector"):
        alone.loss(teacher(x), y)


def test_the_task_refuses_class_targets_and_bad_options_in_one_line() -> None:
    task = make_task("detection")
    with pytest.raises(TaskError) as err:
        task.batch((torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 1])))
    assert "boxes (N, M, 5)" in str(err.value)
    assert "\n" not in str(err.value)
    for bad in ({"layout": "NCHW"}, {"iou_threshold": 0}, {"strides": []}, {"loss": "focal"}, {"max_detections": 0}):
        with pytest.raises(TaskError) as err:
            make_task("detection", **bad)
        assert "\n" not in str(err.value)


def test_pad_rows_are_not_objects_for_the_loss() -> None:
    images, targets = scenes(2)
    padded = torch.cat((targets, torch.full((2, 3, 5), PAD)), 1)
    task = make_task("detection", strides=list(STRIDES), loss="labels")
    model = TinyDetector()
    x, y = task.batch((images, targets))
    _, yp = task.batch((images, padded))
    out = task.forward(model, x).detach()
    assert float(task.loss(out, y)) == pytest.approx(float(task.loss(out, yp)))
    assert float(labelled_loss(task.decode(out), targets, SIZE, STRIDES)) == pytest.approx(float(task.loss(out, y)))


# ---------------------------------------------------------------- the job


UNLABELLED = {
    "model": {"zoo": "convnet", "weights": "w.safetensors"},
    "data": {"name": "imagefolder", "path": "/data/images"},
    "target": {"flops": 0.5},
    "strategy": {"name": "uniform"},
    "task": "detection",
    "task_options": {"labels": False},
}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"task_options": {}}, "the detection task needs a detection data set"),
        ({"data": {"name": "digits"}, "task_options": {}}, "the detection task needs a detection data set"),
        ({"model": {"zoo": "convnet"}}, "the detection task needs a trained network"),
        ({"task_options": {"labels": False, "layout": "NAC"}}, "task 'detection' option layout"),
        ({"quantize": {"mode": "int8"}, "onnx": True}, "INT8 is scored for classification jobs only"),
    ],
)
def test_the_job_config_refuses_what_detection_cannot_read_in_one_line(change, words) -> None:
    from pydantic import ValidationError

    from workers.config import JobConfig

    with pytest.raises(ValidationError) as err:
        JobConfig.model_validate({**UNLABELLED, **change})
    assert err.value.error_count() == 1
    msg = err.value.errors()[0]["msg"]
    assert words in msg
    assert "\n" not in msg


def test_detection_takes_box_data_or_images_without_labels_and_box_data_takes_no_class_task() -> None:
    from pruning.tasks.detection import detection_data
    from pruning.tasks.segmentation import task_data_mismatch
    from workers.config import JobConfig

    assert JobConfig.model_validate(UNLABELLED).task_options == {"labels": False}
    assert detection_data("boxscenes")
    assert detection_data("boxfolder:/data/coco")
    assert not detection_data("scenes")
    assert task_data_mismatch("detection", False, True) is None
    assert task_data_mismatch("distillation", False, True) is None
    why = task_data_mismatch("classification", False, True)
    assert (
        why == "the classification task needs class labels, and the data set is a detection set (give task: detection)"
    )
    assert "needs a segmentation data set" in task_data_mismatch("segmentation", False, True)


def test_an_uploaded_detectors_output_is_checked_against_the_datas_classes() -> None:
    from pruning.tasks.detection import detection_output_mismatch

    assert detection_output_mismatch((7, 8400), 3, {}) is None
    assert detection_output_mismatch((8400, 7), 3, {"layout": "(N,A,4+K)"}) is None
    assert "7 rows per anchor (4+K, K = 3), but the data has 5 classes" in detection_output_mismatch((7, 8400), 5, {})
    assert "layout: '(N,A,4+K)'" in detection_output_mismatch((8400, 7), 3, {})
    assert detection_output_mismatch((7, 8400), 5, {"labels": False}) is None  # no labels: K is the network's


def test_a_detection_job_without_labels_prunes_a_detector_against_itself(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from workers.pipeline import prune_module

    images, _ = scenes(48, seed=1)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    torch.manual_seed(0)
    detector = TinyDetector().eval()
    job = {
        "data": {"name": "imagefolder", "path": str(folder), "input_size": SIZE, "augment": False},
        "target": {"flops": 0.6},
        "strategy": {"name": "uniform"},
        "task": "detection",
        "task_options": {"labels": False, "strides": list(STRIDES)},
        "finetune": {"max_steps": 10},
        "onnx": False,
    }
    summary = prune_module(detector, torch.zeros(2, 3, SIZE, SIZE), job, tmp_path / "out")
    assert (summary["task"], summary["score_name"]) == ("detection", "map")
    assert summary["accuracy_before"] == pytest.approx(1.0)  # the detector's own detections
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    assert summary["flops_after"] <= 0.6 * summary["flops_before"]
    assert summary["score_extras_before"]["map50"] == pytest.approx(1.0)
    assert set(summary["score_extras"]) >= {"map50"}
    assert all(k == "map50" or k.startswith("ap_") for k in summary["score_extras"])


def test_nms_stopped_at_max_keep_keeps_the_same_first_boxes() -> None:
    g = torch.Generator().manual_seed(1)
    boxes, scores = random_boxes(60, g), torch.rand(60, generator=g)
    full = nms(boxes, scores, 0.5).tolist()
    assert nms(boxes, scores, 0.5, max_keep=5).tolist() == full[:5]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
