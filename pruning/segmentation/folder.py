"""A mask folder on disk: `images/` and `masks/` whose files pair by stem (`images/0001.jpg` with
`masks/0001.png`), at the top (split by seed) or under `train/` with optional `val/` and
`test/` (the image folders' split names, `pruning.imagefolder.SPLIT_NAMES`), and an optional
`classes.txt` (one class name a line, in index order) at the top.

Masks are PNG (lossless: a label must survive the file) with one class index per pixel (8-bit
grayscale or palette, whose indices are read as they are) and `IGNORE` for pixels left out.
`scan_maskfolder` pairs the files by name only; `check_pair` decodes one pair and checks it
(same size, indices below the number of classes); the archive upload checks every pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PruningError
from ..imagefolder import IMAGE_SUFFIXES, SPLIT_NAMES, image_channels
from . import IGNORE

Pair = tuple[str, str]  # (image path, mask path)
MASK_MODES = frozenset({"L", "P"})
MAX_CLASSES = IGNORE  # indices 0..254: 255 is the ignore mark
CLASSES_FILE = "classes.txt"


@dataclass
class MaskFolderIndex:
    """The pairs of a mask folder (nothing decoded): `val` / `test` are None where the folder
    does not give that split; `classes` comes from classes.txt (None without one)."""

    root: Path
    layout: str  # "flat" or "split"
    classes: list[str] | None
    train: list[Pair]
    val: list[Pair] | None
    test: list[Pair] | None

    def pairs(self) -> list[Pair]:
        """Every pair of every split."""
        return [p for part in (self.train, self.val, self.test) for p in part or ()]


def _files(folder: Path) -> list[Path]:
    """The visible files directly in `folder`, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def is_maskfolder(root: Path) -> bool:
    """Whether `root` has the layout of a mask folder: images/ or masks/ at the top or under
    train/ (a missing half is then named by `scan_maskfolder`)."""
    return any((root / part).is_dir() or (root / "train" / part).is_dir() for part in ("images", "masks"))


def _pairs(folder: Path, where: str) -> list[Pair]:
    """The (image, mask) pairs of one `images/` + `masks/` folder; PruningError naming the first
    image without a mask, mask without an image, or a folder missing."""
    img_dir, mask_dir = folder / "images", folder / "masks"
    if not img_dir.is_dir():
        raise PruningError(f"{where}images/ is missing (a mask folder holds images/ and masks/)")
    if not mask_dir.is_dir():
        raise PruningError(f"{where}masks/ is missing (a mask folder holds images/ and masks/)")
    images = [p for p in _files(img_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
    masks = _files(mask_dir)
    not_png = [p.name for p in masks if p.suffix.lower() != ".png"]
    if not_png:
        raise PruningError(f"mask {where}masks/{not_png[0]} is not a .png (masks must be lossless PNG)")
    by_stem: dict[str, Path] = {}
    for p in images:
        if p.stem in by_stem:
            raise PruningError(f"{where}images/ holds two images named {p.stem} ({by_stem[p.stem].name}, {p.name})")
        by_stem[p.stem] = p
    mask_stems = {p.stem: p for p in masks}
    lonely = [p.name for s, p in by_stem.items() if s not in mask_stems]
    if lonely:
        raise PruningError(
            f"{len(lonely)} image(s) in {where}images/ have no mask in {where}masks/ (first: {lonely[0]})"
        )
    orphans = [p.name for s, p in mask_stems.items() if s not in by_stem]
    if orphans:
        raise PruningError(
            f"{len(orphans)} mask(s) in {where}masks/ have no image in {where}images/ (first: {orphans[0]})"
        )
    if not by_stem:
        raise PruningError(f"no images in {where}images/")
    return [(str(by_stem[s]), str(mask_stems[s])) for s in sorted(by_stem)]


def read_classes(root: Path) -> list[str] | None:
    """The class names of `classes.txt` (blank lines skipped), None without the file."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PruningError(f"{CLASSES_FILE} cannot be read as UTF-8 text ({exc})") from exc
    if len(names) < 2:
        raise PruningError(f"{CLASSES_FILE} names {len(names)} class(es); a segmentation set needs at least 2")
    if len(names) > MAX_CLASSES:
        raise PruningError(f"{CLASSES_FILE} names {len(names)} classes; at most {MAX_CLASSES} ({IGNORE} means ignore)")
    if len(set(names)) != len(names):
        raise PruningError(f"{CLASSES_FILE} names a class twice")
    return names


def scan_maskfolder(path: str | Path) -> MaskFolderIndex:
    """Index a mask folder (module docstring) by file names; PruningError for a missing half of
    a pair, a folder without images, or a split folder layout it does not know."""
    root = Path(path)
    if not root.is_dir():
        raise PruningError(f"mask folder {root} does not exist")
    classes = read_classes(root)
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return MaskFolderIndex(root, "flat", classes, _pairs(root, ""), None, None)
    known = {n: split for split, names in SPLIT_NAMES.items() for n in names}
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    if not dirs:
        raise PruningError("no images: a mask folder holds images/ and masks/ (or train/images/, train/masks/)")
    found: dict[str, Path] = {}
    for d in dirs:
        if d.name not in known:
            raise PruningError(
                f"unexpected folder {d.name}/: a mask folder holds images/ and masks/, "
                "or train/ (+ val/, test/) with both"
            )
        if known[d.name] in found:
            raise PruningError(f"two {known[d.name]} folders ({found[known[d.name]].name}, {d.name})")
        found[known[d.name]] = d
    if "train" not in found:
        raise PruningError("the split layout needs train/ (with images/ and masks/)")
    parts = {split: _pairs(d, f"{d.name}/") for split, d in found.items()}
    return MaskFolderIndex(root, "split", classes, parts["train"], parts.get("val"), parts.get("test"))


def read_mask(path: str | Path) -> np.ndarray:
    """A mask as a uint8 `(H, W)` array of class indices (a palette PNG's indices as stored)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in MASK_MODES:
                raise PruningError(
                    f"mask {Path(path).name} has mode {img.mode}; masks hold one class index per pixel "
                    "(8-bit grayscale or palette PNG)"
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise PruningError(f"mask {Path(path).name} does not decode ({exc})") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as exc:
        raise PruningError(f"image {Path(path).name} does not decode ({exc})") from exc


def check_pair(pair: Pair, num_classes: int | None, shown: tuple[str, str] | None = None) -> int:
    """Decode a pair's mask and check it against its image: the same size, and (when
    `num_classes` is known) every index other than `IGNORE` below it. Returns the largest
    index other than `IGNORE` (-1 for an all-ignored mask). `shown` names the two files in
    messages (default: their names)."""
    img_name, mask_name = shown or (Path(pair[0]).name, Path(pair[1]).name)
    mask = read_mask(pair[1])
    w, h = image_size(pair[0])
    if mask.shape != (h, w):
        raise PruningError(
            f"mask {mask_name} is {mask.shape[1]} x {mask.shape[0]} pixels, its image {img_name} {w} x {h}"
        )
    labels = mask[mask != IGNORE]
    top = int(labels.max()) if labels.size else -1
    if num_classes is not None and top >= num_classes:
        raise PruningError(
            f"mask {mask_name} holds class index {top}, but {CLASSES_FILE} names {num_classes} classes "
            f"(indices 0-{num_classes - 1}; {IGNORE} means ignore)"
        )
    return top


def count_classes(index: MaskFolderIndex) -> list[str]:
    """The class names: classes.txt's, or "0".."K-1" for K one above the largest index any
    mask holds (every mask decoded); PruningError when fewer than two classes result."""
    if index.classes is not None:
        return index.classes
    top = max(check_pair(p, None) for p in index.pairs())
    if top < 1:
        raise PruningError("the masks hold fewer than 2 classes (add classes.txt to name them)")
    return [str(i) for i in range(top + 1)]


def maskfolder_shape(path: str | Path) -> tuple[int, int]:
    """`(in_channels, num_classes)` of a mask folder: its pairs by name, the first training
    images' headers and the classes (classes.txt's; without it, every mask is decoded)."""
    index = scan_maskfolder(path)
    return image_channels([img for img, _ in index.train[:64]]), len(count_classes(index))
