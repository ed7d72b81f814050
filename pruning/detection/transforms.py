"""Image and boxes transformed together, so every box stays on its object. Evaluation resizes
the image to the square input size (no letterbox: the aspect changes, and the boxes are scaled
with it); training does the same, then scales by a random factor (`SCALE_RANGE`), crops (or, when
smaller, pads at a random place) back to the input size and flips horizontally half the time.
Boxes are clipped to the crop; a box left narrower or lower than `MIN_BOX_PIXELS`, or keeping less
than `MIN_KEPT_SHARE` of its area, is dropped (an object mostly cut away is no longer one a
detector should be asked to find). Tensors in, tensors out: a float image `(C, H, W)` in [0, 1]
and `(k, 5)` rows `[class, x1, y1, x2, y2]` in pixels of that image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE_RANGE = (0.75, 1.5)
MIN_BOX_PIXELS = 2.0
MIN_KEPT_SHARE = 0.25


def resize_boxes(x: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image resized bilinearly to `height` x `width`, its boxes scaled with it."""
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        x = F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    boxes = boxes.clone()
    boxes[:, 1::2] *= width / w
    boxes[:, 2::2] *= height / h
    return x, boxes


def flip_boxes(x: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image mirrored left to right, and its boxes with it."""
    w = x.shape[-1]
    out = boxes.clone()
    out[:, 1], out[:, 3] = w - boxes[:, 3], w - boxes[:, 1]
    return x.flip(-1), out


def eval_sample(x: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full image at `size` x `size`, boxes scaled (evaluation: no crop, no flip)."""
    return resize_boxes(x, boxes, size, size)


def train_sample(x: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random scale-crop of `size` x `size` of the resized image, flipped half the time, with
    the boxes that stay (module docstring). Random draws from torch's global generator, which
    `pruning.data.SeededDraws` seeds per sample."""
    x, boxes = resize_boxes(x, boxes, size, size)
    n = max(1, round(size * float(torch.empty(()).uniform_(*SCALE_RANGE))))
    x, boxes = resize_boxes(x, boxes, n, n)
    if n < size:  # pad: the image lands at a random place on a black square
        top, left = (int(torch.randint(0, size - n + 1, ())) for _ in range(2))
        x = F.pad(x, (left, size - n - left, top, size - n - top))
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        boxes[:, 1:] += shift
    else:
        top, left = (int(torch.randint(0, n - size + 1, ())) for _ in range(2))
        x = x[:, top : top + size, left : left + size]
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        boxes[:, 1:] -= shift
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    boxes[:, 1:] = boxes[:, 1:].clamp(0, size)
    bw, bh = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    keep = (bw >= MIN_BOX_PIXELS) & (bh >= MIN_BOX_PIXELS) & (bw * bh >= MIN_KEPT_SHARE * area)
    boxes = boxes[keep]
    if bool(torch.rand(()) < 0.5):
        x, boxes = flip_boxes(x, boxes)
    return x, boxes
