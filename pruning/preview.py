"""Pictures of what a network predicts, before and after pruning, on a few validation images.

A job writes `previews/<i>.png` for the first `PREVIEW_IMAGES` validation images: the unpruned
network's prediction on the left, the pruned one's on the right, drawn by the job's task
(`Task.render`: boxes for detection, a class overlay for segmentation). People judge a
detector or a segmenter faster by looking than by reading an mAP; a task that draws nothing
(classification) writes no previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import Dataset

from .imagefolder import Normalization
from .tasks import Task

PREVIEW_IMAGES = 6
PREVIEW_DIR = "previews"
MIN_SIDE = 192
"""Small inputs (a 64 px scene) are scaled up (nearest neighbour) to at least this many pixels."""
CAPTION = 14
"""Pixels above each half for its caption."""


def display_image(x: torch.Tensor, normalization: Normalization | None) -> np.ndarray:
    """An input `(C, H, W)` as the `(H, W, 3)` uint8 picture it came from: the normalisation
    undone (or, without one, stretched to its own range); one channel repeated as grey."""
    x = x.detach().float().cpu()
    if normalization is not None:
        mean = torch.tensor(normalization.mean).view(-1, 1, 1)
        std = torch.tensor(normalization.std).view(-1, 1, 1)
        x = x * std + mean
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-6)
    x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def side_by_side(left: Image.Image, right: Image.Image, captions: tuple[str, str]) -> Image.Image:
    """Two pictures of one size next to each other, scaled up to `MIN_SIDE`, each captioned."""
    scale = max(1, -(-MIN_SIDE // min(left.size)))
    w, h = left.size[0] * scale, left.size[1] * scale
    out = Image.new("RGB", (2 * w + 4, h + CAPTION), "white")
    draw = ImageDraw.Draw(out)
    for i, (picture, caption) in enumerate(zip((left, right), captions, strict=True)):
        out.paste(picture.resize((w, h), Image.Resampling.NEAREST), (i * (w + 4), CAPTION))
        draw.text((i * (w + 4) + 2, 1), caption, fill="black")
    return out


def write_previews(
    task: Task,
    before: nn.Module,
    after: nn.Module,
    data: Dataset,
    normalization: Normalization | None,
    out: Path,
    device: torch.device | str = "cpu",
    n: int = PREVIEW_IMAGES,
) -> list[Path]:
    """`out/previews/<i>.png` for the first `n` samples of `data` (a validation split without
    augmentation): `before`'s prediction beside `after`'s, as `task.render` draws them; none
    when the task draws nothing. Returns the files written."""
    count = min(n, len(data))  # type: ignore[arg-type]
    if count == 0:
        return []
    x = torch.stack([data[i][0] for i in range(count)]).to(device)
    modes = before.training, after.training
    before.eval(), after.eval()
    try:
        with torch.no_grad():
            raw = task.forward(before, x), task.forward(after, x)
    finally:
        before.train(modes[0]), after.train(modes[1])
    files: list[Path] = []
    for i in range(count):
        picture = display_image(x[i], normalization)
        drawn = [task.render(picture, outputs, i) for outputs in raw]
        if drawn[0] is None or drawn[1] is None:
            return []
        path = out / PREVIEW_DIR / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        side_by_side(drawn[0], drawn[1], ("unpruned", "pruned")).save(path)
        files.append(path)
    return files
