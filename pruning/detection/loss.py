"""Detection losses read off the decoded output (`pruning.detection.decode.Decoded`), so they
serve any detector that meets the output contract.

`labelled_loss`: a simplified YOLOv8 loss. Task-aligned assignment (TAL, Feng et al. 2021 /
TOOD): per object, the anchors whose centre lies in its box are ranked by the alignment
`s^alpha * IoU^beta` (s: the anchor's score for the object's class, IoU: its predicted box
with the object's) and the `topk` best are its positives; an anchor claimed by several objects
goes to the one its box overlaps most. Soft class targets are the alignment, rescaled per
object so its best anchor's target is that anchor's IoU. The loss is CIoU on the positives'
boxes and binary cross-entropy on every anchor's class scores against the soft targets, both
normalised by the targets' sum, with YOLOv8's gains. Simplified: no distribution focal loss
(the box distribution is decoded inside the network, not in its output), anchor centres are
rebuilt from the strides and the input size (the predicted boxes' centres when the anchor
count does not match), and the assignment is recomputed from the predictions every step.

`distillation_loss`: from a teacher's decoded output, no labels: on every anchor, 1 - GIoU of
the student's box with the teacher's weighted by the teacher's highest class score, plus the
binary KL between the teacher's and the student's class scores (0 for equal outputs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import valid
from .decode import Decoded
from .ops import EPS, box_iou, ciou, giou

BOX_GAIN = 7.5
CLS_GAIN = 0.5
"""YOLOv8's weights of the box and class terms."""


def anchor_centres(strides: Sequence[int], input_size: int) -> torch.Tensor:
    """The anchor centres `(A, 2)` `[x, y]` of a YOLO head on a square input: level by level,
    row-major within a level, at `(i + 0.5) * stride`."""
    out = []
    for s in strides:
        n = math.ceil(input_size / s)
        c = (torch.arange(n, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        out.append(torch.stack((xx.reshape(-1), yy.reshape(-1)), -1))
    return torch.cat(out)


def _log_probs(scores: torch.Tensor, logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log p, log(1 - p))` of class scores given as probabilities or logits."""
    if logits:
        return F.logsigmoid(scores), F.logsigmoid(-scores)
    p = scores.clamp(EPS, 1 - EPS)
    return p.log(), (1 - p).log()


def _bce(scores: torch.Tensor, target: torch.Tensor, logits: bool) -> torch.Tensor:
    """Element-wise binary cross-entropy of scores (probabilities or logits) against soft targets."""
    lp, lq = _log_probs(scores.float(), logits)
    return -(target * lp + (1 - target) * lq)


def assign(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    centres: torch.Tensor,
    targets: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment (module doc) of objects `targets` `(N, M, 5)` to anchors with
    predicted `boxes` `(N, A, 4)`, class probabilities `probs` `(N, A, K)` and `centres`
    `(N, A, 2)`: the positives `(N, A)` bool, each anchor's object box `(N, A, 4)` and its soft
    class targets `(N, A, K)`."""
    n, a, k = probs.shape
    gt_ok = valid(targets)  # (N, M)
    gt_cls = targets[..., 0].long().clamp(0, k - 1)
    gt_box = targets[..., 1:]
    x, y = centres[..., 0][:, None, :], centres[..., 1][:, None, :]  # (N, 1, A)
    inside = (
        (x > gt_box[..., 0:1]) & (x < gt_box[..., 2:3]) & (y > gt_box[..., 1:2]) & (y < gt_box[..., 3:4])
    ) & gt_ok[..., None]  # (N, M, A)
    iou = box_iou(gt_box, boxes).clamp(min=0)  # (N, M, A)
    s = probs.gather(2, gt_cls[:, None, :].expand(n, a, -1)).transpose(1, 2)  # (N, M, A)
    align = s.pow(alpha) * iou.pow(beta) * inside
    kk = min(topk, a)
    top = align.topk(kk, dim=-1).indices  # (N, M, kk)
    pos = torch.zeros_like(inside).scatter_(-1, top, True) & inside & (align > 0)
    # an anchor claimed by several objects goes to the one it overlaps most
    several = pos.sum(1, keepdim=True) > 1  # (N, 1, A)
    best = F.one_hot(iou.argmax(1), targets.shape[1]).transpose(1, 2).bool()  # (N, M, A)
    pos = torch.where(several, best & pos.any(1, keepdim=True), pos)
    fg = pos.any(1)  # (N, A)
    obj = pos.float().argmax(1)  # (N, A): the object of each positive anchor
    tgt_box = gt_box.gather(1, obj[..., None].expand(-1, -1, 4))
    tgt_cls = gt_cls.gather(1, obj)
    # soft targets: the alignment, rescaled so each object's best anchor gets that anchor's IoU
    align = align * pos
    norm = align * (iou * pos).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + EPS)
    weight = norm.amax(1)  # (N, A)
    tgt_scores = F.one_hot(tgt_cls, k).float() * (weight * fg)[..., None]
    return fg, tgt_box, tgt_scores


def labelled_loss(
    decoded: Decoded,
    targets: torch.Tensor,
    input_size: int,
    strides: Sequence[int] = (8, 16, 32),
    topk: int = 10,
) -> torch.Tensor:
    """The simplified YOLOv8 loss (module doc) of a batch against its objects `(N, M, 5)`."""
    boxes, scores = decoded.boxes.float(), decoded.scores.float()
    n, a, _ = boxes.shape
    centres = anchor_centres(strides, input_size).to(boxes.device)
    if len(centres) != a:  # not a YOLO head of these strides: each prediction's own centre
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    with torch.no_grad():
        probs = decoded.probabilities.float()
        fg, tgt_box, tgt_scores = assign(boxes.detach(), probs, centres.expand(n, a, 2).detach(), targets.float(), topk)
    total = tgt_scores.sum().clamp(min=1)
    cls = _bce(scores, tgt_scores, decoded.logits).sum() / total
    if fg.any():
        w = tgt_scores.sum(-1)[fg]
        box = ((1 - ciou(boxes[fg], tgt_box[fg])) * w).sum() / total
    else:
        box = boxes.sum() * 0
    return BOX_GAIN * box + CLS_GAIN * cls


def distillation_loss(student: Decoded, teacher: Decoded) -> torch.Tensor:
    """The teacher-weighted box term plus the class scores' binary KL (module doc)."""
    t_prob = teacher.probabilities.detach().float()
    w = t_prob.amax(-1)  # (N, A)
    g = giou(student.boxes.float(), teacher.boxes.detach().float())
    box = (w * (1 - g)).sum() / w.sum().clamp(min=EPS)
    s_lp, s_lq = _log_probs(student.scores.float(), student.logits)
    t_lp, t_lq = _log_probs(teacher.scores.detach().float(), teacher.logits)
    kl = t_prob * (t_lp - s_lp) + (1 - t_prob) * (t_lq - s_lq)
    return box + kl.sum(-1).mean()
