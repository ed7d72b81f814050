"""ImageFolder data read from disk as it is used: the folder is indexed once (paths and labels),
images are decoded by the `DataLoader`'s worker processes, so memory does not grow with the set.

Layouts (`scan_imagefolder`):
- flat: `ROOT/<class>/**/*.png|jpg|...`, split train/val/test by seed;
- split: `ROOT/train/<class>/...` with optional `ROOT/val/<class>/...` (also `valid/`,
  `validation/`) and `ROOT/test/<class>/...`. A given val/ is the validation split (otherwise 15%
  of train/ by seed); a given test/ is the test split, otherwise the validation images are
  tested on (the usual train/val convention) or, without val/ either, 15% of train/ by seed.

For a task that reads no labels (distillation; `labels=False`), class folders are optional: a
folder (or train/, val/, test/) with fewer than two sub-folders is read as unlabelled images,
every image under it, recursively (`classes` empty, every label 0). With class folders, it is
read as above and the labels go unused.

Images are read as grayscale (1 channel) when every image of an evenly spaced sample of the
training files has a grayscale mode (L, 1, I, ...), otherwise as RGB. Training applies the usual
augmentation: inputs of at most `SMALL_INPUT` px are resized, padded by 1/8 and randomly cropped
back (CIFAR style); larger ones take a random resized crop (scale 8-100%, aspect 3/4-4/3); both
are flipped horizontally half the time. Evaluation resizes the shorter side to the input size
(larger inputs: to size / 0.875) and crops the centre. Per-channel mean and std are measured once
on up to `NORM_SAMPLE` training images (evaluation transform) and applied to every split.

Only Pillow and torch are used (no torchvision)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import PruningError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Split folders of the split layout; the first name of each is the canonical one.
SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
CHANNEL_SAMPLE = 64  # training files whose modes decide 1 or 3 channels (headers only)
NORM_SAMPLE = 512  # training images the per-channel mean and std are measured on
SMALL_INPUT = 64  # inputs up to this size: pad-and-crop augmentation and no centre-crop margin
CROP_FRACTION = 0.875  # larger inputs: evaluation resizes the shorter side to size / 0.875
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
HELD_OUT = 0.15  # fraction of the images a seeded split gives to each of val and test

Sample = tuple[str, int]
S = TypeVar("S")  # what a seeded split divides: (path, label) samples, (image, mask) pairs


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std the inputs are standardised with: `(x - mean) / std`."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict[str, list[float]]:
        """`{"mean": [...], "std": [...]}` for a report."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """The inverse of `as_dict`."""
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    @classmethod
    def of(cls, x: torch.Tensor) -> Normalization:
        """The per-channel statistics of an `(N, C, H, W)` batch."""
        return cls(tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise a `(C, H, W)` or `(N, C, H, W)` tensor."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std


@dataclass
class ImageFolderIndex:
    """The files of an image folder and their labels (nothing decoded): `val` / `test` are
    None where the folder does not give that split."""

    root: Path
    layout: Literal["flat", "split"]
    classes: list[str]
    train: list[Sample]
    val: list[Sample] | None
    test: list[Sample] | None


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)


def _images(folder: Path, limit: int | None = None) -> list[str]:
    """Image files under a class folder (recursive, hidden files skipped) in sorted walk order;
    the first `limit` of them when given."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        out.extend(
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def split_dirs(root: Path) -> dict[str, Path] | None:
    """The split folders (`train`, and `val`/`test` when present) of a split-layout root, or
    None for a flat one: a root is split when it has train/ and no other visible folder than
    the split names."""
    dirs = {p.name: p for p in _class_dirs(root)}
    if "train" not in dirs:
        return None
    known = {n: split for split, names in SPLIT_NAMES.items() for n in names}
    if any(n not in known for n in dirs):
        return None
    found: dict[str, Path] = {}
    for name, p in dirs.items():
        if known[name] in found:
            raise PruningError(f"image folder {root} has two {known[name]} folders ({found[known[name]].name}, {name})")
        found[known[name]] = p
    return found


def _labelled(folder: Path, classes: list[str], what: str) -> list[Sample]:
    index = {c: i for i, c in enumerate(classes)}
    out: list[Sample] = []
    for d in _class_dirs(folder):
        if d.name not in index:
            raise PruningError(f"{what} has a class folder {d.name!r} that train/ lacks")
        out.extend((f, index[d.name]) for f in _images(d))
    return out


UNLABELLED_HINT = "; a task that reads no labels (distillation) also takes a folder of images without them"


def _unlabelled(root: Path, splits: dict[str, Path] | None) -> ImageFolderIndex:
    """Every image under the (train, val, test) folders, with label 0 and no classes."""
    train_root = splits["train"] if splits else root
    train: list[Sample] = [(f, 0) for f in _images(train_root)]
    if not train:
        raise PruningError(f"no images under {root} (expected *.png|jpg, <class>/* or train/*)")
    parts = {k: [(f, 0) for f in _images(splits[k])] for k in ("val", "test") if splits and k in splits}
    for name, part in parts.items():
        if not part:
            raise PruningError(f"image folder {root}: {name}/ holds no images")
    return ImageFolderIndex(root, "split" if splits else "flat", [], train, parts.get("val"), parts.get("test"))


def scan_imagefolder(path: str | Path, labels: bool = True) -> ImageFolderIndex:
    """Index an image folder in either layout (module docstring); refuses a folder without
    two classes or without images, and an empty training class. `labels=False` also takes a
    folder without class folders (unlabelled: `classes` empty)."""
    root = Path(path)
    if not root.is_dir():
        raise PruningError(f"image folder {root} does not exist")
    splits = split_dirs(root)
    train_root = splits["train"] if splits else root
    classes = [p.name for p in _class_dirs(train_root)]
    if len(classes) < 2 and not labels:
        return _unlabelled(root, splits)
    if len(classes) < 2:
        where = f"{train_root.name}/ of {root}" if splits else str(root)
        raise PruningError(
            f"image folder {where} needs one sub-folder per class (found {len(classes)}){UNLABELLED_HINT}"
        )
    train = _labelled(train_root, classes, "train/")
    if not train:
        raise PruningError(f"no images under {root} (expected <class>/*.png|jpg or train/<class>/*)")
    counts = np.bincount([y for _, y in train], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise PruningError(f"image folder {root}: class folder(s) {', '.join(empty)} hold no images")
    val = _labelled(splits["val"], classes, f"{splits['val'].name}/") if splits and "val" in splits else None
    test = _labelled(splits["test"], classes, "test/") if splits and "test" in splits else None
    for name, part in (("val", val), ("test", test)):
        if part is not None and not part:
            raise PruningError(f"image folder {root}: {name}/ holds no images")
    return ImageFolderIndex(root, "split" if splits else "flat", classes, train, val, test)


def image_channels(files: Sequence[str | Path]) -> int:
    """1 if every file has a grayscale mode, else 3 (reads headers only)."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as img:
                if img.mode not in GRAY_MODES:
                    return 3
        except (OSError, ValueError) as exc:
            raise PruningError(f"cannot read image {f}: {exc}") from exc
    return 1 if files else 3


def imagefolder_shape(path: str | Path, labels: bool = True) -> tuple[int, int]:
    """`(in_channels, num_classes)` of an image folder from its training class folders and the
    headers of the first few images of each (`CHANNEL_SAMPLE` in all), without listing every
    file: the reader and the checks at submit time both decide channels with it. Refuses, as
    `scan_imagefolder` would, fewer than two class folders or a training class without images;
    `labels=False` takes a folder without class folders too (0 classes)."""
    root = Path(path)
    if not root.is_dir():
        raise PruningError(f"image folder {root} does not exist")
    splits = split_dirs(root)
    train_root = splits["train"] if splits else root
    dirs = _class_dirs(train_root)
    if len(dirs) < 2 and not labels:
        files = _images(train_root, CHANNEL_SAMPLE)
        if not files:
            raise PruningError(f"no images under {root} (expected *.png|jpg, <class>/* or train/*)")
        return image_channels(files), 0
    if len(dirs) < 2:
        where = f"{train_root.name}/ of {root}" if splits else str(root)
        raise PruningError(f"image folder {where} needs one sub-folder per class (found {len(dirs)}){UNLABELLED_HINT}")
    per_class = max(1, CHANNEL_SAMPLE // len(dirs))
    sampled = {d.name: _images(d, per_class) for d in dirs}
    empty = [name for name, files in sampled.items() if not files]
    if len(empty) == len(dirs):
        raise PruningError(f"no images under {root} (expected <class>/*.png|jpg or train/<class>/*)")
    if empty:
        raise PruningError(f"image folder {root}: class folder(s) {', '.join(empty)} hold no images")
    return image_channels([f for files in sampled.values() for f in files]), len(dirs)


# --- transforms (Pillow images in, tensors out) ---


def decode(path: str | Path, channels: int):
    """Open an image as grayscale (`channels` 1) or RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as exc:
        raise PruningError(f"cannot decode image {path}: {exc}") from exc


def eval_short_side(size: int) -> int:
    """The shorter side evaluation resizes to before its centre crop of `size`."""
    return size if size <= SMALL_INPUT else math.ceil(size / CROP_FRACTION)


def resize_center_crop(img, size: int, short: int):
    """Resize the shorter side to `short`, then crop the centre `size` x `size`."""
    from PIL import Image

    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def random_resized_crop(img, size: int):
    """A crop of random area (`RESIZED_CROP_SCALE`) and aspect (`RESIZED_CROP_RATIO`),
    resized to `size` x `size` (falls back to the centre square after ten tries)."""
    from PIL import Image

    w, h = img.size
    area = w * h
    log_lo, log_hi = math.log(RESIZED_CROP_RATIO[0]), math.log(RESIZED_CROP_RATIO[1])
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*RESIZED_CROP_SCALE))
        aspect = math.exp(float(torch.empty(1).uniform_(log_lo, log_hi)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (1,)))
            top = int(torch.randint(0, h - ch + 1, (1,)))
            return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def to_tensor(img) -> torch.Tensor:
    """A Pillow image as a float `(C, H, W)` tensor in [0, 1]."""
    a = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(a.copy())
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


def pad_random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad a `(C, H, W)` tensor by `pad` on every side and crop a random window of its size."""
    if pad <= 0:
        return x
    _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top, left = int(torch.randint(0, 2 * pad + 1, (1,))), int(torch.randint(0, 2 * pad + 1, (1,)))
    return padded[:, top : top + h, left : left + w]


def eval_tensor(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """An image as evaluation sees it before normalisation (resize + centre crop, [0, 1])."""
    return to_tensor(resize_center_crop(decode(path, channels), size, eval_short_side(size)))


def train_tensor(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """An image with training augmentation, before normalisation (module docstring)."""
    img = decode(path, channels)
    if size <= SMALL_INPUT:
        x = pad_random_crop(to_tensor(resize_center_crop(img, size, size)), size // 8)
    else:
        x = to_tensor(random_resized_crop(img, size))
    return x.flip(-1) if bool(torch.rand(()) < 0.5) else x


def measure_normalization(files: Sequence[str], size: int, channels: int, seed: int = 0) -> Normalization:
    """Per-channel mean and std of up to `NORM_SAMPLE` of `files` (chosen by seed), under the
    evaluation transform."""
    if not files:
        raise PruningError("no training images to measure the normalisation on")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(files), generator=g)[:NORM_SAMPLE].tolist()
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    pixels = 0
    for i in idx:
        x = eval_tensor(files[i], size, channels).double()
        total += x.sum(dim=(1, 2))
        squares += (x * x).sum(dim=(1, 2))
        pixels += x.shape[1] * x.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


class ImageFolderSet(Dataset):
    """`(image, label)` pairs decoded from their files on each access: the set holds only the
    file list, so it can be as large as the disk. `augment` gives training's random crops and
    flips, otherwise the evaluation transform; both end with `normalization`."""

    streams = True  # read from disk: `pruning.data.make_loader` gives it worker processes

    def __init__(
        self, samples: Sequence[Sample], size: int, channels: int, normalization: Normalization, augment: bool
    ) -> None:
        self.samples = list(samples)
        self.size, self.channels = size, channels
        self.normalization, self.augment = normalization, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        x = (train_tensor if self.augment else eval_tensor)(path, self.size, self.channels)
        return self.normalization.apply(x), label

    def plain(self) -> ImageFolderSet:
        """The same images without augmentation (calibration, fingerprints)."""
        return ImageFolderSet(self.samples, self.size, self.channels, self.normalization, augment=False)

    def fingerprint(self) -> bytes:
        """Identifies the files, labels and transform (not the random draws)."""
        h = hashlib.sha1(repr((self.size, self.channels, self.normalization, self.augment)).encode())
        for path, label in self.samples:
            h.update(f"{path}\0{label}\n".encode())
        return h.digest()


def seeded_split(samples: Sequence[S], parts: int, seed: int) -> tuple[list[S], list[S], list[S]]:
    """`(rest, val, test)`: a seeded `HELD_OUT` share of the samples for each of the first
    `parts` held-out splits (1: val only, test empty; 2: both)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(samples), generator=g).tolist()
    n = int(len(samples) * HELD_OUT)
    val = [samples[i] for i in perm[:n]]
    test = [samples[i] for i in perm[n : 2 * n]] if parts == 2 else []
    rest = [samples[i] for i in perm[n * parts :]]
    return rest, val, test


def folder_splits(
    train: Sequence[S], val: Sequence[S] | None, test: Sequence[S] | None, seed: int, subset: int | None, what: str
) -> tuple[list[S], list[S], list[S]]:
    """A folder's `(train, val, test)`: its own val/ and test/ when given (without test/, val/
    is tested on), otherwise seeded shares of train (`seeded_split`); then a seeded `subset` of
    train. `what` names the folder in the refusal when too few images are left to split off."""
    if val is not None:  # val/ given: without test/, the same list is tested on (one data set for both)
        tr, va = list(train), list(val)
        te = list(test) if test is not None else va
    else:
        tr, va, te = seeded_split(train, 1 if test is not None else 2, seed)
        te = list(test) if test is not None else te
    if not va or not te:
        raise PruningError(f"{what}: too few images ({len(train)}) to split off validation")
    if subset:
        keep = torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))[:subset]
        tr = [tr[i] for i in keep.tolist()]
    return tr, va, te
