"""The `(image, target)` data set of a detection job, from the built-in box scenes (in memory)
or a YOLO / COCO folder (decoded from disk on each access), and the `DataSplits` of each.

A sample is a normalised float image `(C, S, S)` and a target `(M, 5)` (`pruning.detection`:
rows `[class, x1, y1, x2, y2]` in input pixels, padded with `PAD`), `M` the most objects of
any image of the set; training samples are augmented with their boxes
(`transforms.train_sample`), evaluation sees the full image resized."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import PruningError
from ..imagefolder import Normalization, decode, folder_splits, image_channels, to_tensor
from . import pad_targets
from .folder import BoxSample, scan_boxfolder
from .scenes import BOX_CLASSES, make_boxscenes
from .transforms import eval_sample, train_sample

SCENE_SPLITS = {"train": 400, "val": 100, "test": 100}
"""Scenes per split of the built-in set (each split from its own seed)."""
NORM_SAMPLE = 256  # training images the per-channel mean and std of a folder are measured on


class DetectionSet(Dataset):
    """`(image, target)` samples: from uint8 images in memory (`images` `(N, C, H, W)` with
    `boxes`, per image `(k, 5)` rows in fractions of the image) or from files (`samples`, image
    paths with such rows; decoded on access: `streams` is then true, so
    `pruning.data.make_loader` gives it worker processes). `augment` gives training's
    scale-crop and flip, otherwise the full image at `size`; both end with `normalization`.
    Targets have `max_objects` rows."""

    def __init__(
        self,
        size: int,
        channels: int,
        normalization: Normalization,
        augment: bool,
        max_objects: int,
        samples: Sequence[BoxSample] | None = None,
        images: torch.Tensor | None = None,
        boxes: Sequence[torch.Tensor] | None = None,
    ) -> None:
        if (samples is None) == (images is None) or (images is None) != (boxes is None):
            raise ValueError("give samples (files) or images and boxes (tensors)")
        self.size, self.channels, self.normalization, self.augment = size, channels, normalization, augment
        self.max_objects = max_objects
        self.samples = list(samples) if samples is not None else None
        self.images, self.boxes = images, list(boxes) if boxes is not None else None
        self.streams = samples is not None

    def __len__(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.images)  # type: ignore[arg-type]

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample `i` before any transform: a float image in [0, 1] and its `(k, 5)` rows in
        pixels of that image."""
        if self.samples is not None:
            path, rows = self.samples[i]
            x, fractions = to_tensor(decode(path, self.channels)), torch.from_numpy(np.array(rows, dtype=np.float32))
        else:
            assert self.images is not None
            assert self.boxes is not None
            x, fractions = self.images[i].float().div(255.0), self.boxes[i].float()
        h, w = x.shape[-2:]
        scale = torch.tensor([1.0, w, h, w, h])
        return x, fractions.reshape(-1, 5) * scale

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, rows = self.raw(i)
        x, rows = (train_sample if self.augment else eval_sample)(x, rows, self.size)
        return self.normalization.apply(x), pad_targets([rows], self.max_objects)[0]

    def plain(self) -> DetectionSet:
        """The same samples without augmentation (calibration, fingerprints)."""
        return DetectionSet(
            self.size,
            self.channels,
            self.normalization,
            False,
            self.max_objects,
            self.samples,
            self.images,
            self.boxes,
        )

    def fingerprint(self) -> bytes:
        """Identifies the samples, their boxes and the transform (not the random draws)."""
        h = hashlib.sha1(repr((self.size, self.channels, self.normalization, self.augment, self.max_objects)).encode())
        if self.samples is not None:
            for path, fractions in self.samples:
                h.update(f"{path}\0".encode())
                h.update(np.asarray(fractions, dtype=np.float32).tobytes())
        else:
            assert self.images is not None
            assert self.boxes is not None
            h.update(self.images.numpy().tobytes())
            for rows in self.boxes:
                h.update(rows.numpy().tobytes() + b"\n")
        return h.digest()


def load_boxscenes(input_size: int, seed: int, subset: int | None = None, augment: bool = True):
    """The built-in box scenes as `DataSplits` (`SCENE_SPLITS` scenes, drawn at `input_size`)."""
    from ..data import DataSplits

    drawn = {k: make_boxscenes(n, input_size, seed * 1000 + i) for i, (k, n) in enumerate(SCENE_SPLITS.items())}
    if subset:
        drawn["train"] = (drawn["train"][0][:subset], drawn["train"][1][:subset])
    norm = Normalization.of(drawn["train"][0].float().div(255.0))
    m = max(1, *(len(b) for _, boxes in drawn.values() for b in boxes))

    def make(split: str, aug: bool) -> DetectionSet:
        images, boxes = drawn[split]
        return DetectionSet(
            input_size,
            3,
            norm,
            aug,
            m,
            images=images,
            boxes=[b / b.new_tensor([1.0, *[input_size] * 4]) for b in boxes],
        )

    classes = list(BOX_CLASSES)
    return DataSplits(
        "boxscenes",
        make("train", augment),
        make("val", False),
        make("test", False),
        len(classes),
        3,
        input_size,
        norm,
        classes,
    )


def _measure(samples: Sequence[BoxSample], size: int, channels: int, seed: int) -> Normalization:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(samples), generator=g)[:NORM_SAMPLE].tolist()
    raw = DetectionSet(size, channels, Normalization((0.0,) * channels, (1.0,) * channels), False, 1, samples)
    xs = [eval_sample(*raw.raw(i), size)[0] for i in idx]
    return Normalization.of(torch.stack(xs))


def load_boxfolder(
    path: str | Path,
    input_size: int,
    seed: int,
    subset: int | None = None,
    augment: bool = True,
    normalization: Normalization | None = None,
):
    """A YOLO or COCO folder as `DataSplits`: its own val/ and test/ when given (the image
    folders' rule: without test/, val/ is tested on), otherwise seeded shares of train."""
    from ..data import DataSplits

    index = scan_boxfolder(path)
    m = index.max_objects()
    train, val, test = folder_splits(index.train, index.val, index.test, seed, subset, f"detection folder {path}")
    channels = image_channels([img for img, _ in train[:64]])
    norm = normalization or _measure(train, input_size, channels, seed)
    if len(norm.mean) != channels:
        raise PruningError(f"stored normalisation has {len(norm.mean)} channels, the images {channels}")
    train_set = DetectionSet(input_size, channels, norm, augment, m, train)
    val_set = DetectionSet(input_size, channels, norm, False, m, val)
    test_set = val_set if test is val else DetectionSet(input_size, channels, norm, False, m, test)
    return DataSplits(
        "boxfolder", train_set, val_set, test_set, len(index.classes), channels, input_size, norm, index.classes
    )
