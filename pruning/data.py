"""Data sets, all read from local disk (nothing is downloaded).

- `digits`: scikit-learn's shipped 8x8 digits (1,797 images), resized; the fast set for tests.
- `fashion-mnist`: 60k+10k 28x28 images from Debian's `dataset-fashion-mnist` (IDX files).
- `cifar10:PATH`: the CIFAR-10 python layout (read with a restricted unpickler that only
  rebuilds numpy arrays) or the binary layout.
- `imagefolder:PATH`: one sub-folder of images per class, at the top or under train/ (+ val/,
  test/); streamed from disk with augmentation (`pruning.imagefolder`).
- `synthetic`: random tensors, for smoke tests only.
- `scenes`: the built-in segmentation scenes (shapes on texture, generated from the seed), and
  `maskfolder:PATH`: a segmentation set of `images/` + `masks/` (`pruning.segmentation`); their
  samples are `(image, mask)` with a class index per pixel.
- `boxscenes`: the same scenes with each object's box (`pruning.detection`), and
  `boxfolder:PATH`: a YOLO or COCO layout on disk; their samples are `(image, target)` with a
  `(M, 5)` target of boxes.

Every set is split train/val/test with a fixed seed (an image folder's own val/ and test/ are
kept); calibration batches for data-dependent criteria and BN recalibration are drawn at random
from the training split (without augmentation). Inputs are standardised per channel with the
training split's mean and std (`DataSplits.normalization`).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .errors import PruningError
from .imagefolder import (
    ImageFolderSet,
    Normalization,
    folder_splits,
    imagefolder_shape,
    measure_normalization,
    scan_imagefolder,
)

FASHION_MNIST_DIR = Path(os.environ.get("SECATEURS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
DATASETS = (
    "digits",
    "fashion-mnist",
    "cifar10",
    "imagefolder",
    "synthetic",
    "scenes",
    "maskfolder",
    "boxscenes",
    "boxfolder",
)
SEGMENTATION_DATASETS = ("scenes", "maskfolder")
"""The data sets whose samples are `(image, mask)` pairs (semantic segmentation)."""
DETECTION_DATASETS = ("boxscenes", "boxfolder")
"""The data sets whose samples are `(image, target)` with `(M, 5)` box targets (object detection)."""


def data_task(name: str) -> str:
    """What a data set's targets are for, by its name: "segmentation" (masks), "detection"
    (boxes) or "classification" (one label an image); an uploaded set records the same word."""
    if name in SEGMENTATION_DATASETS:
        return "segmentation"
    return "detection" if name in DETECTION_DATASETS else "classification"


@dataclass
class DataSplits:
    """Train/val/test sets plus the shape facts a model needs."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: int
    normalization: Normalization | None = None
    classes: list[str] | None = None

    def describe(self) -> dict[str, Any]:
        """The facts a job stores with its outputs: shape, class names and the normalisation
        its inputs take (a resumed job reuses it)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "classes": self.classes,
            "normalization": self.normalization.as_dict() if self.normalization else None,
            "sizes": {k: dataset_size(getattr(self, k)) for k in ("train", "val", "test")},
        }


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _split(x: torch.Tensor, y: torch.Tensor, fractions: tuple[float, float], seed: int) -> tuple[TensorDataset, ...]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_val, n_test = int(len(y) * fractions[0]), int(len(y) * fractions[1])
    parts = perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]
    return tuple(TensorDataset(x[p], y[p]) for p in parts)


def _digits(input_size: int, seed: int) -> DataSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    x = _resize(x, input_size)
    norm = Normalization.of(x)
    train, val, test = _split(norm.apply(x), y, (0.2, 0.2), seed)
    return DataSplits("digits", train, val, test, 10, 1, input_size, norm, [str(i) for i in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    _, dtype, ndim = data[0] << 8 | data[1], data[2], data[3]
    if dtype != 0x08:
        raise PruningError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.exists():
            return cand
    raise PruningError(
        f"Fashion-MNIST file {stem} not found under {root}; install it with "
        "`apt-get install dataset-fashion-mnist` or set SECATEURS_FASHION_MNIST to its folder"
    )


FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The IDX files of a Fashion-MNIST folder (each may be gzipped, `.gz`)."""


def fashion_mnist_arrays(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One Fashion-MNIST split (`train` or `t10k`) as uint8 images (N, 28, 28) and labels (N,)."""
    root = Path(root or FASHION_MNIST_DIR)
    images = _read_idx(_find(root, f"{split}-images-idx3-ubyte"))
    labels = _read_idx(_find(root, f"{split}-labels-idx1-ubyte"))
    return images, labels


def _fashion_mnist(input_size: int, seed: int, subset: int | None, root: Path | None = None) -> DataSplits:
    train_images, train_labels = fashion_mnist_arrays("train", root)
    test_images, test_labels = fashion_mnist_arrays("t10k", root)
    xtr = torch.from_numpy(train_images.copy()).float().unsqueeze(1) / 255.0
    ytr = torch.from_numpy(train_labels.copy()).long()
    xte = torch.from_numpy(test_images.copy()).float().unsqueeze(1) / 255.0
    yte = torch.from_numpy(test_labels.copy()).long()
    return _from_arrays("fashion-mnist", xtr, ytr, xte, yte, 10, input_size, seed, subset)


def _from_arrays(
    name: str,
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xte: torch.Tensor,
    yte: torch.Tensor,
    num_classes: int,
    input_size: int,
    seed: int,
    subset: int | None,
) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ytr), generator=g)
    n_val = min(5000, len(ytr) // 10)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if subset:
        train_idx = train_idx[:subset]
        te_perm = torch.randperm(len(yte), generator=g)[: max(1000, subset // 5)]
        xte, yte = xte[te_perm], yte[te_perm]
    x_train = _resize(xtr[train_idx], input_size)
    norm = Normalization.of(x_train)
    train = TensorDataset(norm.apply(x_train), ytr[train_idx])
    val = TensorDataset(norm.apply(_resize(xtr[val_idx], input_size)), ytr[val_idx])
    test = TensorDataset(norm.apply(_resize(xte, input_size)), yte)
    return DataSplits(name, train, val, test, num_classes, xtr.shape[1], input_size, norm)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches and nothing else: only numpy's array
    reconstruction is allowed, so a crafted file cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise PruningError(f"refusing to unpickle {module}.{name} from a CIFAR-10 file")


CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
"""The batch files of a CIFAR-10 folder (`.bin` in the binary layout)."""


def cifar10_layout(root: Path) -> tuple[str, Path]:
    """The layout ("py" or "bin") of a CIFAR-10 folder and the folder holding its batches:
    `root` itself or its `cifar-10-batches-py/` / `-bin/`. PruningError when no layout is
    there in full (every batch file present)."""
    for layout, suffix in (("py", ""), ("bin", ".bin")):
        sub = root / f"cifar-10-batches-{layout}"
        folder = sub if sub.is_dir() else root
        if (folder / f"data_batch_1{suffix}").exists():
            missing = [b + suffix for b in CIFAR10_BATCHES if not (folder / (b + suffix)).is_file()]
            if missing:
                raise PruningError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)}")
            return layout, folder
    raise PruningError(f"no CIFAR-10 batches under {root} (expected cifar-10-batches-py/ or -bin/ layout)")


def check_data_folder(name: str, path: str | Path) -> None:
    """A quick look (file names only, nothing read) that the folder of a `name` data set holds
    what its reader needs: PruningError naming what is missing. Image folders: `imagefolder_shape`."""
    root = Path(path)
    if not root.is_dir():
        raise PruningError(f"{name} path {path} is not a folder")
    if name == "cifar10":
        cifar10_layout(root)
    elif name == "fashion-mnist":
        for stem in FASHION_MNIST_FILES:
            _find(root, stem)
    elif name == "imagefolder":
        imagefolder_shape(root)
    elif name == "maskfolder":
        from .segmentation.folder import scan_maskfolder

        scan_maskfolder(root)
    elif name == "boxfolder":
        from .detection.folder import scan_boxfolder

        scan_boxfolder(root)


def _cifar10(path: Path, input_size: int, seed: int, subset: int | None) -> DataSplits:
    layout, folder = cifar10_layout(Path(path))
    if layout == "py":

        def load(name: str) -> tuple[np.ndarray, np.ndarray]:
            with open(folder / name, "rb") as f:
                d = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
            return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"])

        parts = [load(f"data_batch_{i}") for i in range(1, 6)]
        test = load("test_batch")
    else:

        def load(name: str) -> tuple[np.ndarray, np.ndarray]:
            raw = np.fromfile(folder / name, dtype=np.uint8).reshape(-1, 3073)
            return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

        parts = [load(f"data_batch_{i}.bin") for i in range(1, 6)]
        test = load("test_batch.bin")
    xtr = torch.from_numpy(np.concatenate([p[0] for p in parts])).float() / 255.0
    ytr = torch.from_numpy(np.concatenate([p[1] for p in parts])).long()
    xte = torch.from_numpy(test[0].copy()).float() / 255.0
    yte = torch.from_numpy(np.asarray(test[1])).long()
    return _from_arrays("cifar10", xtr, ytr, xte, yte, 10, input_size, seed, subset)


def _imagefolder(
    path: Path,
    input_size: int,
    seed: int,
    subset: int | None,
    augment: bool = True,
    normalization: Normalization | None = None,
    labels: bool = True,
) -> DataSplits:
    index = scan_imagefolder(path, labels)
    train, val, test = folder_splits(index.train, index.val, index.test, seed, subset, f"image folder {path}")
    channels, _ = imagefolder_shape(path, labels)
    norm = normalization or measure_normalization([f for f, _ in train], input_size, channels, seed)
    if len(norm.mean) != channels:
        raise PruningError(f"stored normalisation has {len(norm.mean)} channels, the images {channels}")
    train_set = ImageFolderSet(train, input_size, channels, norm, augment=augment)
    val_set = ImageFolderSet(val, input_size, channels, norm, augment=False)
    test_set = val_set if test is val else ImageFolderSet(test, input_size, channels, norm, augment=False)
    return DataSplits(
        "imagefolder", train_set, val_set, test_set, len(index.classes), channels, input_size, norm, index.classes
    )


def _synthetic(input_size: int, seed: int, in_channels: int = 3, num_classes: int = 10, n: int = 256) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_channels, input_size, input_size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    train, val, test = _split(x, y, (0.25, 0.25), seed)
    return DataSplits("synthetic", train, val, test, num_classes, in_channels, input_size)


DEFAULT_SIZES = {
    "digits": 16,
    "fashion-mnist": 28,
    "cifar10": 32,
    "imagefolder": 32,
    "synthetic": 16,
    "scenes": 32,
    "maskfolder": 64,
    "boxscenes": 64,
    "boxfolder": 128,
}


def load_dataset(
    spec: str,
    input_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    path: str | Path | None = None,
    augment: bool = True,
    normalization: Normalization | None = None,
    labels: bool = True,
) -> DataSplits:
    """Load a data set by name (`DATASETS`) with its folder in `path`; the command line's
    `cifar10:PATH` form is accepted too. `subset` takes a seeded subset of the training split
    (for speed). For `imagefolder`, `maskfolder`, `boxfolder`, `scenes` and `boxscenes`: `augment` turns training
    augmentation on; for the folders, `normalization` is used instead of measuring it (a resumed
    job passes the one it stored). For `imagefolder`, `labels=False` (a task that reads none)
    takes a folder without class folders (`num_classes` 0)."""
    name, _, inline = spec.partition(":")
    path = str(path) if path else inline
    if name not in DATASETS:
        raise PruningError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    size = input_size or DEFAULT_SIZES[name]
    if name == "digits":
        return _digits(size, seed)
    if name == "fashion-mnist":
        return _fashion_mnist(size, seed, subset, Path(path) if path else None)
    if name == "synthetic":
        return _synthetic(size, seed)
    if name == "scenes":
        from .segmentation.sets import load_scenes

        return load_scenes(size, seed, subset, augment)
    if name == "boxscenes":
        from .detection.sets import load_boxscenes

        return load_boxscenes(size, seed, subset, augment)
    if not path:
        raise PruningError(f"data set {name} needs a local path: {name}:/path/to/data")
    if not Path(path).exists():
        raise PruningError(f"{name} path {path} does not exist")
    if name == "cifar10":
        return _cifar10(Path(path), size, seed, subset)
    if name == "maskfolder":
        from .segmentation.sets import load_maskfolder

        return load_maskfolder(Path(path), size, seed, subset, augment, normalization)
    if name == "boxfolder":
        from .detection.sets import load_boxfolder

        return load_boxfolder(Path(path), size, seed, subset, augment, normalization)
    return _imagefolder(Path(path), size, seed, subset, augment, normalization, labels)


def data_workers() -> int:
    """Worker processes that decode a set read from disk: `SECATEURS_DATA_WORKERS`, by default
    one per CPU but one, at most 4."""
    env = os.environ.get("SECATEURS_DATA_WORKERS")
    if env is not None and env.strip():
        return max(0, int(env))
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _base(ds: Dataset) -> Dataset:
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def streams(ds: Dataset) -> bool:
    """Whether a set (or a Subset of one) decodes its samples from disk on access."""
    return bool(getattr(_base(ds), "streams", False))


class SeededDraws(Dataset):
    """A set indexed by `(index, seed)`: each sample's random draws (augmentation) come from
    torch's generator seeded with `seed` for that access alone, so they do not depend on which
    worker process decodes the sample, nor on how many there are."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return dataset_size(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.ds[index]


class SeededOrder(torch.utils.data.Sampler[tuple[int, int]]):
    """A shuffled order of `size` samples, each with the seed of its random draws, both from
    `generator` in the loading process (one epoch per iteration). The order is the one
    `shuffle=True` gives with the same generator."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (self.size,), generator=self.generator).tolist()
        return iter(zip(order, seeds, strict=True))


def make_loader(ds: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over a set; shuffling is seeded so runs repeat. A set read from disk is
    decoded in `data_workers()` worker processes; when shuffled (training, with random
    augmentation), each sample's draws are seeded from the loader's generator in this process
    (`SeededOrder`, `SeededDraws`), so the batches are the same whatever the number of workers
    (which follows the machine's CPU count)."""
    g = torch.Generator().manual_seed(seed)
    workers = data_workers() if streams(ds) else 0
    if streams(ds) and shuffle:
        return DataLoader(
            SeededDraws(ds), batch_size=batch_size, sampler=SeededOrder(dataset_size(ds), g), num_workers=workers
        )
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None, num_workers=workers)


def without_augmentation(ds: Dataset) -> Dataset:
    """The same samples without random augmentation (the evaluation view of a set that has one,
    `plain()`: image, mask and box folders, the scenes; kept inside a Subset); other sets are
    returned as they are."""
    if isinstance(ds, Subset):
        return Subset(without_augmentation(ds.dataset), ds.indices)
    plain = getattr(ds, "plain", None)
    return plain() if callable(plain) else ds


def sample_fingerprint(ds: Dataset) -> bytes:
    """Bytes that identify a data set's contents for caches (an in-memory set's first input; a
    set read from disk: its files, labels and transform, not one random draw)."""
    fingerprint = getattr(ds, "fingerprint", None)
    if callable(fingerprint):
        return fingerprint()
    x, _ = ds[0]
    return x.numpy().tobytes()


def dataset_size(ds: Dataset) -> int:
    """The number of samples of a data set (torch's `Dataset` does not promise a length; every
    data set here has one)."""
    if not isinstance(ds, Sized):
        raise PruningError(f"{type(ds).__name__} has no length")
    return len(ds)


def calibration_batches(
    ds: Dataset, n_batches: int = 4, batch_size: int = 64, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches sampled at random (without replacement) from a training split, for
    data-dependent criteria and BN recalibration (the survey's caveat: share the
    training distribution); images read from disk come without augmentation, so the
    batches repeat."""
    g = torch.Generator().manual_seed(seed)
    size = dataset_size(ds)
    n = min(size, n_batches * batch_size)
    idx = torch.randperm(size, generator=g)[:n]
    loader = make_loader(Subset(without_augmentation(ds), idx.tolist()), batch_size=batch_size)
    return [(x, y) for x, y in loader]


def iterate_inputs(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """Just the inputs of a list of (input, label) batches."""
    for x, _ in batches:
        yield x
