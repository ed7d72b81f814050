"""The `(image, mask)` data set of a segmentation job, from the built-in scenes (in memory) or
a mask folder (decoded from disk on each access), and the `DataSplits` of each.

A sample is a normalised float image `(C, H, W)` and a long mask `(H, W)`; training samples
are augmented together (`transforms.train_pair`), evaluation sees the full image."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import PruningError
from ..imagefolder import Normalization, decode, folder_splits, image_channels, to_tensor
from .folder import Pair, count_classes, read_mask, scan_maskfolder
from .scenes import SCENE_CLASSES, make_scenes
from .transforms import eval_pair, train_pair

SCENE_SPLITS = {"train": 400, "val": 100, "test": 100}
"""Scenes per split of the built-in set (each split from its own seed)."""


class SegmentationSet(Dataset):
    """`(image, mask)` pairs: from uint8 tensors in memory (`images` `(N, C, H, W)`, `masks`
    `(N, H, W)`) or from files (`pairs`, decoded on access: `streams` is then true, so
    `pruning.data.make_loader` gives it worker processes). `augment` gives training's joint
    scale-crop and flip, otherwise the full image at `size`; both end with `normalization`."""

    def __init__(
        self,
        size: int,
        channels: int,
        normalization: Normalization,
        augment: bool,
        pairs: Sequence[Pair] | None = None,
        images: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> None:
        if (pairs is None) == (images is None):
            raise ValueError("give pairs (files) or images and masks (tensors)")
        self.size, self.channels, self.normalization, self.augment = size, channels, normalization, augment
        self.pairs = list(pairs) if pairs is not None else None
        self.images, self.masks = images, masks
        self.streams = pairs is not None

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.images)  # type: ignore[arg-type]

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample `i` before any transform: a float image in [0, 1] and a uint8 mask."""
        if self.pairs is not None:
            img, mask = self.pairs[i]
            return to_tensor(decode(img, self.channels)), torch.from_numpy(read_mask(mask))
        assert self.images is not None
        assert self.masks is not None
        return self.images[i].float().div(255.0), self.masks[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = self.raw(i)
        x, mask = (train_pair if self.augment else eval_pair)(x, mask, self.size)
        return self.normalization.apply(x), mask.long()

    def plain(self) -> SegmentationSet:
        """The same samples without augmentation (calibration, fingerprints)."""
        return SegmentationSet(self.size, self.channels, self.normalization, False, self.pairs, self.images, self.masks)

    def fingerprint(self) -> bytes:
        """Identifies the samples and the transform (not the random draws)."""
        h = hashlib.sha1(repr((self.size, self.channels, self.normalization, self.augment)).encode())
        if self.pairs is not None:
            for img, mask in self.pairs:
                h.update(f"{img}\0{mask}\n".encode())
        else:
            assert self.images is not None
            assert self.masks is not None
            h.update(self.images.numpy().tobytes())
            h.update(self.masks.numpy().tobytes())
        return h.digest()


def _norm_of(images: torch.Tensor) -> Normalization:
    return Normalization.of(images.float().div(255.0))


def load_scenes(input_size: int, seed: int, subset: int | None = None, augment: bool = True):
    """The built-in scenes as `DataSplits` (`SCENE_SPLITS` scenes, drawn at `input_size`)."""
    from ..data import DataSplits

    drawn = {k: make_scenes(n, input_size, seed * 1000 + i) for i, (k, n) in enumerate(SCENE_SPLITS.items())}
    if subset:
        drawn["train"] = (drawn["train"][0][:subset], drawn["train"][1][:subset])
    norm = _norm_of(drawn["train"][0])

    def make(split: str, aug: bool) -> SegmentationSet:
        images, masks = drawn[split]
        return SegmentationSet(input_size, 3, norm, aug, images=images, masks=masks)

    return DataSplits(
        "scenes",
        make("train", augment),
        make("val", False),
        make("test", False),
        len(SCENE_CLASSES),
        3,
        input_size,
        norm,
        list(SCENE_CLASSES),
    )


NORM_SAMPLE = 256  # training images the per-channel mean and std of a mask folder are measured on


def _measure(pairs: Sequence[Pair], size: int, channels: int, seed: int) -> Normalization:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(pairs), generator=g)[:NORM_SAMPLE].tolist()
    raw = SegmentationSet(size, channels, Normalization((0.0,) * channels, (1.0,) * channels), False, pairs)
    xs = [raw[i][0] for i in idx]
    return Normalization.of(torch.stack(xs))


def load_maskfolder(
    path: str | Path,
    input_size: int,
    seed: int,
    subset: int | None = None,
    augment: bool = True,
    normalization: Normalization | None = None,
):
    """A mask folder as `DataSplits`: its own val/ and test/ when given (the image folders'
    rule: without test/, val/ is tested on), otherwise seeded shares of train."""
    from ..data import DataSplits

    index = scan_maskfolder(path)
    classes = count_classes(index)
    train, val, test = folder_splits(index.train, index.val, index.test, seed, subset, f"mask folder {path}")
    channels = image_channels([img for img, _ in train[:64]])
    norm = normalization or _measure(train, input_size, channels, seed)
    if len(norm.mean) != channels:
        raise PruningError(f"stored normalisation has {len(norm.mean)} channels, the images {channels}")
    train_set = SegmentationSet(input_size, channels, norm, augment, train)
    val_set = SegmentationSet(input_size, channels, norm, False, val)
    test_set = val_set if test is val else SegmentationSet(input_size, channels, norm, False, test)
    return DataSplits("maskfolder", train_set, val_set, test_set, len(classes), channels, input_size, norm, classes)
