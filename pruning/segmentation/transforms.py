"""Image and mask transformed together, so every pixel keeps its label: training takes a random
scale (`SCALE_RANGE` of the input size, shorter side) and a random crop of the input size,
flipped horizontally half the time; evaluation resizes the full image to the input size, no
crop. Images are resized bilinearly, masks by nearest neighbour (a label is never blended);
padding a crop gives the image zeros and the mask `IGNORE`. Tensors in, tensors out: a float
image `(C, H, W)` in [0, 1] and an integer mask `(H, W)`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import IGNORE

SCALE_RANGE = (0.75, 1.5)


def resize_pair(x: torch.Tensor, mask: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both resized to `height` x `width`: the image bilinearly, the mask by nearest neighbour."""
    if tuple(x.shape[-2:]) == (height, width) and tuple(mask.shape[-2:]) == (height, width):
        return x, mask
    x = F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    m = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0]
    return x, m.to(mask.dtype)


def eval_pair(x: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full image and its mask at `size` x `size` (evaluation: no crop, no flip)."""
    return resize_pair(x, mask, size, size)


def train_pair(x: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random scale-crop of `size` x `size` of both, flipped together half the time (random
    draws from torch's global generator, which `pruning.data.SeededDraws` seeds per sample)."""
    h, w = x.shape[-2:]
    scale = float(torch.empty(()).uniform_(*SCALE_RANGE)) * size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x, mask = resize_pair(x, mask, nh, nw)
    ph, pw = max(0, size - nh), max(0, size - nw)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
        mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE)
        nh, nw = nh + ph, nw + pw
    top = int(torch.randint(0, nh - size + 1, ()))
    left = int(torch.randint(0, nw - size + 1, ()))
    x, mask = x[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]
    if bool(torch.rand(()) < 0.5):
        x, mask = x.flip(-1), mask.flip(-1)
    return x, mask
