"""Previews: a job's pictures of what the network predicts before and after pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from pruning.data import load_dataset, without_augmentation
from pruning.imagefolder import Normalization
from pruning.preview import CAPTION, MIN_SIDE, display_image, write_previews
from pruning.tasks import make_task


class Fixed(nn.Module):
    """Logits that call every pixel class `k` (a segmenter whose answer is known)."""

    def __init__(self, k: int, classes: int = 4) -> None:
        super().__init__()
        self.k, self.classes = k, classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.classes, x.shape[2], x.shape[3])
        logits[:, self.k] = 1.0
        return logits * self.scale


def test_display_image_undoes_the_normalisation() -> None:
    norm = Normalization((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    picture = torch.rand(3, 5, 7)
    shown = display_image(norm.apply(picture), norm)
    assert shown.shape == (5, 7, 3)
    assert shown.dtype == np.uint8
    assert np.abs(shown.astype(float) - picture.permute(1, 2, 0).numpy() * 255).max() <= 1.0
    grey = display_image(torch.rand(1, 4, 4), None)
    assert grey.shape == (4, 4, 3)
    assert (grey[..., 0] == grey[..., 2]).all()


def test_segmentation_previews_show_each_network_on_its_side(tmp_path: Path) -> None:
    data = load_dataset("scenes", input_size=32, subset=16)
    val = without_augmentation(data.val)
    task = make_task("segmentation")
    files = write_previews(task, Fixed(0), Fixed(2), val, data.normalization, tmp_path, n=3)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["previews/0.png", "previews/1.png", "previews/2.png"]
    picture = np.asarray(Image.open(files[0]).convert("RGB")).astype(int)
    scale = -(-MIN_SIDE // 32)
    side = 32 * scale
    assert picture.shape == (side + CAPTION, 2 * side + 4, 3)
    left, right = picture[CAPTION:, :side], picture[CAPTION:, side + 4 :]
    original = display_image(val[0][0], data.normalization).repeat(scale, 0).repeat(scale, 1).astype(int)
    assert np.array_equal(left, original)  # class 0 everywhere: nothing drawn over the input
    # class 2 everywhere: every pixel blended towards class 2's colour
    tinted = np.round(0.45 * original + 0.55 * np.array([60, 180, 75])).astype(int)
    assert np.abs(right - tinted).max() <= 1


def test_a_task_that_draws_nothing_writes_no_previews(tmp_path: Path) -> None:
    data = load_dataset("digits", input_size=8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert write_previews(make_task("classification"), net, net, data.val, None, tmp_path) == []
    assert not (tmp_path / "previews").exists()


def test_no_images_no_previews(tmp_path: Path) -> None:
    data = load_dataset("scenes", input_size=32, subset=16)
    assert write_previews(make_task("segmentation"), Fixed(0), Fixed(1), data.val, None, tmp_path, n=0) == []


class OneBox(nn.Module):
    """A detector in the default layout `(N, 4+K, A)` with one confident box of class 1 (or none)."""

    def __init__(self, found: bool) -> None:
        super().__init__()
        self.found = found
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 4 + 3, 5)
        out[:, :4] = torch.tensor([16.0, 16.0, 10.0, 10.0]).view(1, 4, 1)  # cxcywh: x 11..21
        if self.found:
            out[:, 4 + 1, 0] = 0.9
        return out * self.scale


def test_detection_previews_box_what_each_network_found(tmp_path: Path) -> None:
    data = load_dataset("boxscenes", input_size=32, subset=16)
    task = make_task("detection", num_classes=3)
    files = write_previews(task, OneBox(False), OneBox(True), data.val, data.normalization, tmp_path, n=1)
    picture = np.asarray(Image.open(files[0]).convert("RGB")).astype(int)
    side = 32 * -(-MIN_SIDE // 32)
    left, right = picture[CAPTION:, :side], picture[CAPTION:, side + 4 :]
    original = display_image(data.val[0][0], data.normalization).repeat(side // 32, 0).repeat(side // 32, 1)
    assert np.array_equal(left, original.astype(int))  # nothing found: nothing drawn
    box_colour = np.array([60, 180, 75])  # class 1's
    outlined = (np.abs(right - box_colour).sum(-1) == 0).nonzero()
    scale = side // 32
    assert outlined[1].min() == 11 * scale  # the box's left edge, in the scaled picture
    assert outlined[1].max() >= 21 * scale - 1
