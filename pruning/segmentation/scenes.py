"""The built-in segmentation scenes: coloured disks, squares and triangles on a textured
background, generated from a seed (no download), so tests and benchmarks have a segmentation
set anywhere. Classes: background and the three shape kinds. A shape's colour is drawn at
random, independent of its kind, so the class must be told from the outline, not the colour;
later shapes cover earlier ones, and a one-pixel band along every outline is marked `IGNORE`
(as Pascal VOC marks its boundaries), so the ignore index is exercised too.

`write_scenes_archive` writes the same scenes as a mask-folder archive (`images/`, `masks/`,
`classes.txt`, `train/` `val/` `test/`), the form POST /v1/datasets takes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import torch
import torch.nn.functional as F

from . import IGNORE

SCENE_CLASSES = ("background", "disk", "square", "triangle")
MAX_SHAPES = 3  # shapes per scene: 1 to this many
ARCHIVE_MTIME = 1_767_225_600  # 2026-01-01 UTC: the date of every file the archive writers write


def _textures(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """`(n, 3, size, size)` backgrounds in [0, 1]: smooth noise of a random tint plus grain."""
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    tint = torch.rand(n, 3, 1, 1, generator=g)
    grain = torch.rand(n, 3, size, size, generator=g) * 0.15
    return (0.45 * smooth + 0.4 * tint + grain).clamp(0, 1)


def _shapes(kind: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """Boolean `(n, size, size)` masks of one shape per scene, of `kind` (1 disk, 2 square,
    3 triangle, per scene) at a random place and size."""
    n = len(kind)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = (0.12 + 0.16 * torch.rand(n, 1, 1, generator=g)) * size
    cy = r + (size - 2 * r) * torch.rand(n, 1, 1, generator=g)
    cx = r + (size - 2 * r) * torch.rand(n, 1, 1, generator=g)
    dy, dx = yy - cy, xx - cx
    disk = dy**2 + dx**2 <= r * r
    square = (dy.abs() <= r) & (dx.abs() <= r)
    # an upright triangle: apex r above the centre, base r below, widening linearly
    triangle = (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2)
    k = kind.view(n, 1, 1)
    return torch.where(k == 1, disk, torch.where(k == 2, square, triangle))


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose upper or left neighbour holds another class: a one-pixel band along every
    outline (the band marked `IGNORE`); `mask` is `(n, H, W)`."""
    edge = torch.zeros_like(mask, dtype=torch.bool)
    edge[:, 1:, :] |= mask[:, 1:, :] != mask[:, :-1, :]
    edge[:, :, 1:] |= mask[:, :, 1:] != mask[:, :, :-1]
    return edge


def draw_scenes(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scenes' drawing, shared by the segmentation and the detection scenes: float images
    `(n, 3, size, size)` in [0, 1], each shape's full outline `(MAX_SHAPES, n, size, size)` (bool,
    all False for a slot a scene does not use) and its kind `(MAX_SHAPES, n)` (1 disk, 2 square,
    3 triangle), slots in drawing order (a later slot covers an earlier one)."""
    if n < 1 or size < 8:
        raise ValueError("scenes need n >= 1 and size >= 8")
    g = torch.Generator().manual_seed(seed)
    images = _textures(g, n, size)
    shapes = torch.randint(1, MAX_SHAPES + 1, (n,), generator=g)
    outlines, kinds = [], []
    for slot in range(MAX_SHAPES):
        kind = torch.randint(1, len(SCENE_CLASSES), (n,), generator=g)
        inside = _shapes(kind, g, size) & (slot < shapes).view(n, 1, 1)
        colour = torch.rand(n, 3, 1, 1, generator=g)
        images = torch.where(inside[:, None], colour.expand_as(images), images)
        outlines.append(inside)
        kinds.append(kind)
    return images, torch.stack(outlines), torch.stack(kinds)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as uint8."""
    return (images * 255).round().to(torch.uint8)


def make_scenes(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` scenes of `size` x `size` pixels: uint8 images `(n, 3, size, size)` and uint8 masks
    `(n, size, size)` holding an index of `SCENE_CLASSES` or `IGNORE` per pixel."""
    images, outlines, kinds = draw_scenes(n, size, seed)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for inside, kind in zip(outlines, kinds, strict=True):
        masks = torch.where(inside, kind.view(n, 1, 1).to(torch.uint8), masks)
    masks[_outline(masks)] = IGNORE
    return to_uint8(images), masks


def png_bytes(array: torch.Tensor) -> bytes:
    """A uint8 image `(3, H, W)` (RGB) or `(H, W)` (grayscale) as PNG file bytes."""
    from PIL import Image

    a = array.numpy()
    img = Image.fromarray(a.transpose(1, 2, 0) if a.ndim == 3 else a, mode="RGB" if a.ndim == 3 else "L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file `name` holding `data` to an open tar (dated `ARCHIVE_MTIME`, so the
    archive's bytes repeat and its files unpack with a date zip can hold)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = ARCHIVE_MTIME
    tf.addfile(info, io.BytesIO(data))


def write_scenes_archive(
    path: str | Path, splits: dict[str, int] | None = None, size: int = 32, seed: int = 0, wrap: str = "scenes"
) -> Path:
    """Write scenes as a `.tar.gz` mask folder at `path`: `<wrap>/<split>/images/NNNN.png`,
    `<wrap>/<split>/masks/NNNN.png` for each split of `splits` (split -> count; default 160
    train, 48 val, 48 test, each split drawn from its own seed) and `<wrap>/classes.txt`."""
    splits = splits or {"train": 160, "val": 48, "test": 48}
    out = Path(path)
    with tarfile.open(out, "w:gz") as tf:
        tar_add(tf, f"{wrap}/classes.txt", ("\n".join(SCENE_CLASSES) + "\n").encode())
        for k, (split, count) in enumerate(splits.items()):
            images, masks = make_scenes(count, size, seed * 1000 + k)
            for i in range(count):
                tar_add(tf, f"{wrap}/{split}/images/{i:04d}.png", png_bytes(images[i]))
                tar_add(tf, f"{wrap}/{split}/masks/{i:04d}.png", png_bytes(masks[i]))
    return out
