"""The built-in detection scenes (`boxscenes`): the segmentation scenes' drawing
(`pruning.segmentation.scenes.draw_scenes`: disks, squares and triangles of random colours on a
textured background, later shapes covering earlier ones), with each object's box taken from its
visible pixels. Classes: disk, square, triangle (K=3; detection has no background class).

An object of which fewer than `MIN_VISIBLE_SHARE` of its pixels (or fewer than
`MIN_VISIBLE_PIXELS`) stay visible is given no box: what is left of it is a sliver whose kind
cannot be told from its outline, so a label there would teach a detector to report what cannot
be seen, and the box of the visible remnant would not be the object's box either. Its pixels
stay in the image, as background.

`write_yolo_archive` and `write_coco_archive` write the same scenes as a YOLO (Ultralytics layout)
or a COCO archive, the forms POST /v1/datasets takes, for upload tests and benchmarks."""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..segmentation.scenes import draw_scenes, png_bytes, tar_add, to_uint8

BOX_CLASSES = ("disk", "square", "triangle")
MIN_VISIBLE_SHARE = 0.3  # of an object's own pixels that must stay visible for it to get a box
MIN_VISIBLE_PIXELS = 6


def visible_boxes(outlines: torch.Tensor, kinds: torch.Tensor) -> list[torch.Tensor]:
    """Per scene, the `(k, 5)` rows `[class, x1, y1, x2, y2]` (pixel edges: a shape covering
    columns 3..7 has x1 3, x2 8) of the objects visible enough (module docstring), in drawing
    order; `outlines` `(slots, n, H, W)` and `kinds` `(slots, n)` as `draw_scenes` gives them."""
    slots, n = kinds.shape
    size = outlines.shape[-1]
    covered = torch.zeros_like(outlines[0])
    table = torch.zeros(slots, n, 6)  # per slot and scene: keep, class, x1, y1, x2, y2
    ramp = torch.arange(size)
    for slot in reversed(range(slots)):  # a slot is covered by the ones drawn after it
        seen = outlines[slot] & ~covered
        covered = covered | outlines[slot]
        full, count = outlines[slot].sum(dim=(1, 2)), seen.sum(dim=(1, 2))
        keep = (full > 0) & (count >= MIN_VISIBLE_PIXELS) & (count >= MIN_VISIBLE_SHARE * full)
        cols, rows = seen.any(dim=1), seen.any(dim=2)  # (n, W), (n, H)
        x1 = torch.where(cols, ramp, size).amin(dim=1)
        x2 = torch.where(cols, ramp, -1).amax(dim=1) + 1
        y1 = torch.where(rows, ramp, size).amin(dim=1)
        y2 = torch.where(rows, ramp, -1).amax(dim=1) + 1
        table[slot] = torch.stack([keep.float(), kinds[slot].float() - 1, x1, y1, x2, y2], dim=1)
    return [table[:, i][table[:, i, 0] > 0, 1:].clone() for i in range(n)]


def make_boxscenes(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`n` scenes of `size` x `size` pixels: uint8 images `(n, 3, size, size)` and, per scene,
    its objects' rows `(k, 5)` `[class, x1, y1, x2, y2]` in pixels (class an index of `BOX_CLASSES`)."""
    images, outlines, kinds = draw_scenes(n, size, seed)
    return to_uint8(images), visible_boxes(outlines, kinds)


Add = Callable[[str, bytes], None]


@contextmanager
def _archive(path: Path) -> Iterator[Add]:
    """A writer of files into a new `.zip` (by the suffix) or `.tar.gz` at `path`."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            yield zf.writestr
    else:
        with tarfile.open(path, "w:gz") as tf:
            yield lambda name, data: tar_add(tf, name, data)


def _drawn(
    splits: dict[str, int] | None, size: int, seed: int
) -> Iterator[tuple[str, torch.Tensor, list[torch.Tensor]]]:
    """Each split's scenes, from its own seed (as the segmentation scenes archive draws them)."""
    for k, (split, count) in enumerate((splits or {"train": 160, "val": 48, "test": 48}).items()):
        images, boxes = make_boxscenes(count, size, seed * 1000 + k)
        yield split, images, boxes


def yolo_lines(rows: torch.Tensor, width: int, height: int) -> str:
    """Object rows `[class, x1, y1, x2, y2]` (pixels) as YOLO label text: `class cx cy w h` a
    line, normalised by the image's width and height."""
    lines = []
    for c, x1, y1, x2, y2 in rows.tolist():
        cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def write_yolo_archive(
    path: str | Path, splits: dict[str, int] | None = None, size: int = 32, seed: int = 0, wrap: str = "boxscenes"
) -> Path:
    """Write scenes as a YOLO archive (`.tar.gz`, or `.zip` by the suffix) in Ultralytics' layout:
    `<wrap>/images/<split>/NNNN.png`, `<wrap>/labels/<split>/NNNN.txt` and `<wrap>/data.yaml`
    naming the classes, for each split of `splits` (split -> count; default 160 train, 48 val,
    48 test, each split drawn from its own seed)."""
    out = Path(path)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(BOX_CLASSES))
    parts = list((splits or {"train": 160, "val": 48, "test": 48}).keys())
    yaml = "path: .\n" + "".join(f"{s}: images/{s}\n" for s in parts) + f"nc: {len(BOX_CLASSES)}\nnames:\n{names}"
    with _archive(out) as add:
        add(f"{wrap}/data.yaml", yaml.encode())
        for split, images, boxes in _drawn(splits, size, seed):
            for i, rows in enumerate(boxes):
                add(f"{wrap}/images/{split}/{i:04d}.png", png_bytes(images[i]))
                add(f"{wrap}/labels/{split}/{i:04d}.txt", yolo_lines(rows, size, size).encode())
    return out


def coco_json(boxes: list[torch.Tensor], size: int, names: list[str] | None = None) -> dict:
    """A COCO instances document for `size` x `size` images named `NNNN.png` (image ids from 1)
    with `boxes`' objects (`bbox` `[x, y, w, h]` in pixels) and categories 1..K of `BOX_CLASSES`."""
    images: list[dict] = []
    annotations: list[dict] = []
    for i, rows in enumerate(boxes):
        images.append({"id": i + 1, "file_name": f"{i:04d}.png", "width": size, "height": size})
        for c, x1, y1, x2, y2 in rows.tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names or BOX_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_archive(
    path: str | Path, splits: dict[str, int] | None = None, size: int = 32, seed: int = 0, wrap: str = "boxscenes"
) -> Path:
    """Write scenes as a COCO archive (`.tar.gz`, or `.zip` by the suffix):
    `<wrap>/annotations/instances_<split>.json` and the images `<wrap>/<split>/NNNN.png`, for each
    split of `splits` (as `write_yolo_archive`; the same scenes for the same seed)."""
    out = Path(path)
    with _archive(out) as add:
        for split, images, boxes in _drawn(splits, size, seed):
            add(f"{wrap}/annotations/instances_{split}.json", json.dumps(coco_json(boxes, size)).encode())
            for i in range(len(boxes)):
                add(f"{wrap}/{split}/{i:04d}.png", png_bytes(images[i]))
    return out
