"""Mean average precision by COCO's own evaluator (pycocotools' `COCOeval`).

`coco_map(predictions, ground_truths)` scores images' detections against their boxes: mAP
averaged over IoU thresholds 0.50:0.05:0.95 (COCO's AP), mAP at IoU 0.5, and each class's AP
over the same thresholds (101-point interpolated precision, all areas, at most `max_detections`
per image). torchmetrics' MeanAveragePrecision wraps the same evaluator but needs torchvision,
which cannot be installed beside the project's torch build, so COCOeval is called directly."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .decode import Detections


@dataclass
class GroundTruth:
    """One image's objects: `boxes` `xyxy` `(m, 4)` and `classes` `(m,)`."""

    boxes: torch.Tensor
    classes: torch.Tensor


@dataclass
class MapScores:
    """`map` (AP@[.5:.95]), `map50` (AP@0.5) and each class's AP@[.5:.95] by class index (only
    the classes with at least one ground-truth object)."""

    map: float
    map50: float
    per_class: dict[int, float]


def _xywh(boxes: torch.Tensor) -> np.ndarray:
    b = boxes.detach().double().cpu().numpy().reshape(-1, 4)
    return np.stack((b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1)


def _annotation(ident: int, image: int, cls: int, box: np.ndarray) -> dict[str, Any]:
    """One COCO annotation of a box `[x, y, w, h]` (not a crowd)."""
    area = float(max(box[2], 0) * max(box[3], 0))
    return {"id": ident, "image_id": image, "category_id": cls, "bbox": box.tolist(), "area": area, "iscrowd": 0}


def coco_map(
    predictions: Sequence[Detections], ground_truths: Sequence[GroundTruth], max_detections: int = 100
) -> MapScores:
    """COCO's AP of the detections against the objects, image by image (see the module doc);
    0 when no image has an object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} images of detections for {len(ground_truths)} of objects")
    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    classes: set[int] = set()
    for i, (p, g) in enumerate(zip(predictions, ground_truths, strict=True)):
        images.append({"id": i})
        for box, c in zip(_xywh(g.boxes), g.classes.tolist(), strict=True):
            classes.add(int(c))
            area = float(max(box[2], 0) * max(box[3], 0))
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": box.tolist(),
                    "area": area,
                    "iscrowd": 0,
                }
            )
        for box, c, s in zip(_xywh(p.boxes), p.classes.tolist(), p.scores.tolist(), strict=True):
            classes.add(int(c))
            area = float(max(box[2], 0) * max(box[3], 0))
            dts.append(
                {
                    "id": len(dts) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": box.tolist(),
                    "area": area,
                    "score": float(s),
                    "iscrowd": 0,
                }
            )
    if not gts:
        return MapScores(0.0, 0.0, {})
    categories = [{"id": c} for c in sorted(classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": images, "annotations": dts, "categories": categories}
        dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, int(max_detections)]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    per_class = {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            per_class[int(c)] = float(p[p > -1].mean())
    return MapScores(max(float(ev.stats[0]), 0.0), max(float(ev.stats[1]), 0.0), per_class)
