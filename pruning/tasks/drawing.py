"""What the tasks' previews draw with (`Task.render`): one colour per class, boxes with labels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
    ],
    dtype=np.float64,
)
"""Class colours (class k takes row k modulo the rows; row 0 is the segmentation background's)."""


def colour(k: int) -> tuple[int, int, int]:
    """The colour of class `k` for a box (row 0, black, is skipped: boxes need to stand out)."""
    r, g, b = PALETTE[1 + k % (len(PALETTE) - 1)]
    return int(r), int(g), int(b)


def draw_boxes(
    picture: np.ndarray, boxes: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, scale: int = 3
) -> Image.Image:
    """`picture` (`(H, W, 3)` uint8) scaled up `scale` times (nearest) with each `xyxy` box (input
    pixels) outlined in its class's colour and labelled `class score`: drawn at the larger size so
    thin lines and labels stay readable on a small input."""
    h, w = picture.shape[:2]
    out = Image.fromarray(picture).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(out)
    for box, k, s in zip(boxes.tolist(), classes.tolist(), scores.tolist(), strict=True):
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour(int(k)), width=2)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{int(k)} {s:.2f}", fill=colour(int(k)))
    return out
