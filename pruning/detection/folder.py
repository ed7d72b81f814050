"""A detection set on disk, in YOLO or COCO layout (told apart by `box_format`), indexed and
checked: every label read, nothing decoded but what a check needs.

YOLO (Ultralytics): images with one `.txt` label file each, of the same relative path and stem
under the matching labels folder, one object a line `class cx cy w h` (fractions 0-1 of the
image's width and height). Layouts: `images/<split>/` + `labels/<split>/` (Ultralytics),
`<split>/images/` + `<split>/labels/` (Roboflow), or `images/` + `labels/` (split by seed).
Class names from `data.yaml` (or the one `*.yaml` at the top; `names:` a list or a 0..K-1
mapping, read with `yaml.safe_load`; its `train:`/`val:` paths are not followed, the folders
above are what is read), else `classes.txt` (one name a line), else "0".."K-1" for K one above
the largest class index. An image without a label file has no objects (a background image).

COCO: `annotations/instances_<split>.json` (`train`, `val2017`, ...; the split names of
`pruning.imagefolder.SPLIT_NAMES`, a year suffix allowed) with the images under `<name>/`,
`images/<name>/`, `<split>/`, `images/<split>/`, `images/` or the top; or Roboflow's
`<split>/_annotations.coco.json` beside its images; or one lone annotations JSON (split by seed).
`bbox` is `[x, y, w, h]` in pixels; category ids (any integers) are mapped in increasing order to
0..K-1, their names kept; crowd annotations (`iscrowd: 1`) are skipped and counted.

Checks (`PruningError`, one line naming the file): malformed lines or JSON, a class index or
category the set does not name, a box outside its image beyond `TOLERANCE` (inside it, the box
is clipped to the image and counted), labels without an image. A box of zero width or height is
skipped and counted. `BoxCounts` keeps the numbers, so what was clipped or skipped is shown."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeGuard

import numpy as np

from ..errors import PruningError
from ..imagefolder import IMAGE_SUFFIXES, SPLIT_NAMES, image_channels

TOLERANCE = 0.01  # of the image's side: how far a box may reach past the image (then clipped)
MAX_OBJECTS = 1000  # objects one image may hold (a target has this many rows at most)
YAML_MAX_BYTES = 1 << 20
CLASSES_FILE = "classes.txt"
YAML_NAMES = ("data.yaml", "data.yml")
ROBOFLOW_COCO = "_annotations.coco.json"
LABEL_PARTS = ("images", "labels", "annotations")
"""Folders of a detection layout (a lone one is a part of it, not a wrapper)."""

BoxSample = tuple[str, np.ndarray]
"""(image path, `(k, 5)` float32 rows `[class, x1, y1, x2, y2]` in fractions of the image's width
and height)."""


@dataclass
class BoxCounts:
    """What reading the labels found, beyond the objects kept: shown with an uploaded set."""

    images: int = 0
    objects: int = 0
    images_without_objects: int = 0
    clipped: int = 0  # boxes reaching past the image within TOLERANCE, clipped to it
    skipped_empty: int = 0  # boxes of zero width or height
    skipped_crowd: int = 0  # COCO crowd annotations
    unlisted_images: int = 0  # COCO: image files beside the listed ones that no JSON names (not read)

    def as_dict(self) -> dict[str, int]:
        """The counts by name, for a report."""
        return dict(self.__dict__)


@dataclass
class BoxFolderIndex:
    """The samples of a YOLO or COCO folder with their boxes (no image decoded): `val` / `test`
    are None where the folder does not give that split; `files` are every file the set reads."""

    root: Path
    format: Literal["yolo", "coco"]
    layout: str  # "flat" or "split"
    classes: list[str]
    train: list[BoxSample]
    val: list[BoxSample] | None
    test: list[BoxSample] | None
    counts: BoxCounts = field(default_factory=BoxCounts)
    files: set[str] = field(default_factory=set)
    sizes: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # COCO: path -> (w, h, where listed)

    def samples(self) -> list[BoxSample]:
        """Every sample of every split."""
        return [s for part in (self.train, self.val, self.test) for s in part or ()]

    def max_objects(self) -> int:
        """The most objects any image holds (at least 1): the rows of the set's targets."""
        return max([1, *(len(b) for _, b in self.samples())])


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and _visible(p)}


def _walk(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under `folder` (recursive, hidden ones skipped) with one of `suffixes`, sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        out.extend(
            Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and Path(f).suffix.lower() in suffixes
        )
    return out


def _known_split(name: str) -> str | None:
    """The canonical split a folder or file name stands for (`valid`, `val2017` -> val), or None."""
    base = re.sub(r"\d+$", "", name.lower())
    for split, names in SPLIT_NAMES.items():
        if name.lower() in names or base in names:
            return split
    return None


def _split_folders(folder: Path) -> dict[str, Path] | None:
    """`folder`'s sub-folders by split when they are all split names and train is one of them."""
    dirs = _dirs(folder)
    if not dirs or any(_known_split(n) is None for n in dirs):
        return None
    found: dict[str, Path] = {}
    for name, p in dirs.items():
        split = _known_split(name)
        assert split is not None
        if split in found:
            raise PruningError(f"two {split} folders ({found[split].name}, {name})")
        found[split] = p
    return found if "train" in found else None


def _unwrap(root: Path) -> Path:
    """`root`, or the folder that alone wraps a layout (`mydata/images/...`)."""
    for _ in range(8):
        entries = [p for p in root.iterdir() if _visible(p)]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].name in LABEL_PARTS:
            return root
        if _known_split(entries[0].name) is not None:
            return root
        root = entries[0]
    return root


# --- class names ---


def _yaml_file(root: Path) -> Path | None:
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = [p for p in sorted(root.iterdir()) if p.is_file() and _visible(p) and p.suffix.lower() in (".yaml", ".yml")]
    return found[0] if len(found) == 1 else None


def _yaml_names(path: Path) -> list[str] | None:
    """The class names of an Ultralytics data YAML (None when it names none)."""
    import yaml

    if path.stat().st_size > YAML_MAX_BYTES:
        raise PruningError(f"{path.name} is over {YAML_MAX_BYTES:,} bytes")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PruningError(f"{path.name} is not valid YAML ({first})") from exc
    if not isinstance(doc, dict):
        raise PruningError(f"{path.name} is not a YAML mapping (expected names: and the split paths)")
    names = doc.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0, str(k)))
        if any(not isinstance(k, int) or isinstance(k, bool) for k in keys) or keys != list(range(len(keys))):
            raise PruningError(f"{path.name}: names: maps class indices 0..K-1 to names, got keys {keys[:6]}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise PruningError(f"{path.name}: names: must be a list of class names or a 0..K-1 mapping")
    if any(isinstance(n, (dict, list)) or n is None for n in names):
        raise PruningError(f"{path.name}: names: holds something other than a class name")
    out = [str(n) for n in names]
    nc = doc.get("nc")
    if nc is not None and nc != len(out):
        raise PruningError(f"{path.name}: nc is {nc} but names: lists {len(out)} classes")
    if len(set(out)) != len(out):
        raise PruningError(f"{path.name}: names: names a class twice")
    return out


def _text_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PruningError(f"{path.name} cannot be read as UTF-8 text ({exc})") from exc
    if not names:
        raise PruningError(f"{path.name} names no class")
    if len(set(names)) != len(names):
        raise PruningError(f"{path.name} names a class twice")
    return names


# --- YOLO ---


def _yolo_parts(root: Path) -> tuple[str, dict[str, tuple[Path, Path]]]:
    """The layout and, per split ("all" for a flat folder), its (images folder, labels folder)."""
    if (root / "images").is_dir() or (root / "labels").is_dir():
        if not (root / "images").is_dir():
            raise PruningError("labels/ has no images/ beside it (a YOLO folder holds images/ and labels/)")
        if not (root / "labels").is_dir():
            raise PruningError("images/ has no labels/ beside it (a YOLO folder holds images/ and labels/)")
        splits = _split_folders(root / "images")
        if splits is None:
            stray = _split_folders(root / "labels")
            if stray:
                raise PruningError(f"labels/{next(iter(stray.values())).name}/ has no images/ folder of that name")
            return "flat", {"all": (root / "images", root / "labels")}
        labels = _dirs(root / "labels")
        parts = {}
        for split, folder in splits.items():
            if folder.name not in labels:
                raise PruningError(f"images/{folder.name}/ has no labels/{folder.name}/")
            parts[split] = (folder, labels[folder.name])
        for name in labels:
            if name not in {f.name for f in splits.values()}:
                raise PruningError(f"labels/{name}/ has no images/{name}/ (labels without images)")
        return "split", parts
    splits = _split_folders(root)
    if splits is None:
        raise PruningError(
            "no YOLO layout: expected images/ + labels/, images/train/ + labels/train/, or train/images/"
        )
    parts = {}
    for split, folder in splits.items():
        if not (folder / "images").is_dir():
            raise PruningError(f"{folder.name}/images/ is missing (a YOLO split holds images/ and labels/)")
        if not (folder / "labels").is_dir():
            raise PruningError(f"{folder.name}/labels/ is missing (a YOLO split holds images/ and labels/)")
        parts[split] = (folder / "images", folder / "labels")
    return "split", parts


def _number(tok: str, where: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise PruningError(f"{where}: {tok[:20]!r} is not a number") from None
    if not math.isfinite(v):
        raise PruningError(f"{where}: {tok[:20]!r} is not a finite number")
    return v


def _class_index(v: float, where: str, num_classes: int | None, source: str) -> int:
    if v < 0 or v != int(v):
        raise PruningError(f"{where}: class {v:g} is not a class index (0, 1, ...)")
    c = int(v)
    if num_classes is not None and c >= num_classes:
        raise PruningError(f"{where}: class {c} unknown ({source} names {num_classes}: indices 0-{num_classes - 1})")
    return c


def place_box(
    x1: float, y1: float, x2: float, y2: float, counts: BoxCounts, where: str, tol_x: float, tol_y: float, unit: str
) -> tuple[float, float, float, float] | None:
    """A box in fractions of its image, checked: PruningError when it reaches past the image by
    more than the tolerances, clipped (and counted) within them, None (counted) when it has no
    area. `unit` says how `where`'s numbers read in the message."""
    if x1 < -tol_x or y1 < -tol_y or x2 > 1 + tol_x or y2 > 1 + tol_y:
        raise PruningError(f"{where}: box outside the image ({unit})")
    cx1, cy1, cx2, cy2 = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0), min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        counts.clipped += 1
    if cx2 <= cx1 or cy2 <= cy1:
        counts.skipped_empty += 1
        return None
    return cx1, cy1, cx2, cy2


def read_yolo_labels(path: Path, shown: str, num_classes: int | None, source: str, counts: BoxCounts) -> np.ndarray:
    """A YOLO label file's objects as `(k, 5)` rows in fractions (module docstring's checks)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PruningError(f"{shown} cannot be read as UTF-8 text ({type(exc).__name__})") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks:
            continue
        where = f"{shown} line {n}"
        if len(toks) != 5:
            raise PruningError(f"{where}: expected 5 values 'class cx cy w h', got {len(toks)}")
        c, cx, cy, w, h = (_number(t, where) for t in toks)
        cls = _class_index(c, where, num_classes, source)
        if w < 0 or h < 0:
            raise PruningError(f"{where}: negative width or height ({w:g}, {h:g})")
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        unit = f"x {x1:.3f} to {x2:.3f}, y {y1:.3f} to {y2:.3f}; YOLO boxes are fractions 0-1 of the image"
        box = place_box(x1, y1, x2, y2, counts, where, TOLERANCE, TOLERANCE, unit)
        if box is not None:
            rows.append((float(cls), *box))
    if len(rows) > MAX_OBJECTS:
        raise PruningError(f"{shown} holds {len(rows)} objects, more than {MAX_OBJECTS}")
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def scan_yolo(root: Path) -> BoxFolderIndex:
    """Index a YOLO folder (module docstring)."""
    layout, parts = _yolo_parts(root)
    files: set[str] = set()
    classes: list[str] | None = None
    source = ""
    yaml_path = _yaml_file(root)
    if yaml_path is not None:
        classes, source = _yaml_names(yaml_path), yaml_path.name
        files.add(str(yaml_path))
    if classes is None and (root / CLASSES_FILE).is_file():
        classes, source = _text_names(root / CLASSES_FILE), CLASSES_FILE
        files.add(str(root / CLASSES_FILE))
    counts = BoxCounts()
    found: dict[str, list[BoxSample]] = {}
    for split, (img_dir, lab_dir) in parts.items():
        images = _walk(img_dir, IMAGE_SUFFIXES)
        if not images:
            raise PruningError(f"no images in {_rel(img_dir, root)}/")
        stems: dict[PurePosixPath, Path] = {}
        for p in images:
            key = PurePosixPath(p.relative_to(img_dir).as_posix()).with_suffix("")
            if key in stems:
                raise PruningError(f"{_rel(img_dir, root)}/ holds two images named {key} ({stems[key].name}, {p.name})")
            stems[key] = p
        labels = {
            PurePosixPath(p.relative_to(lab_dir).as_posix()).with_suffix(""): p for p in _walk(lab_dir, (".txt",))
        }
        orphans = [p for k, p in labels.items() if k not in stems]
        if orphans:
            raise PruningError(
                f"{len(orphans)} label file(s) in {_rel(lab_dir, root)}/ have no image in {_rel(img_dir, root)}/ "
                f"(first: {_rel(orphans[0], root)})"
            )
        samples: list[BoxSample] = []
        for key, img in stems.items():
            lab = labels.get(key)
            boxes = (
                read_yolo_labels(lab, _rel(lab, root), len(classes) if classes else None, source, counts)
                if lab is not None
                else np.zeros((0, 5), np.float32)
            )
            files.add(str(img))
            if lab is not None:
                files.add(str(lab))
            samples.append((str(img), boxes))
        found[split] = samples
    if classes is None:
        top = max([-1, *(int(b[:, 0].max()) for _, b in (s for part in found.values() for s in part) if len(b))])
        if top < 0:
            raise PruningError("the labels hold no objects (and no data.yaml or classes.txt names the classes)")
        classes = [str(i) for i in range(top + 1)]
    return _index(root, "yolo", layout, classes, found, counts, files)


def _index(
    root: Path,
    fmt: Literal["yolo", "coco"],
    layout: str,
    classes: list[str],
    found: dict[str, list[BoxSample]],
    counts: BoxCounts,
    files: set[str],
) -> BoxFolderIndex:
    if "all" in found:
        train, val, test = found["all"], None, None
    else:
        train, val, test = found["train"], found.get("val"), found.get("test")
    index = BoxFolderIndex(root, fmt, layout, classes, train, val, test, counts, files)
    for _, b in index.samples():
        counts.images += 1
        counts.objects += len(b)
        counts.images_without_objects += len(b) == 0
    return index


# --- COCO ---


def _coco_files(root: Path) -> tuple[str, dict[str, tuple[Path, list[Path]]]]:
    """The layout and, per split ("all" for one lone file), its annotations JSON and the folders
    its images may be in (first found first)."""
    found: dict[str, tuple[Path, list[Path]]] = {}
    ann = root / "annotations"
    if ann.is_dir():
        jsons = [p for p in sorted(ann.iterdir()) if p.is_file() and _visible(p) and p.suffix.lower() == ".json"]
        named = [p for p in jsons if p.stem.lower().startswith("instances_")] or jsons
        for p in named:
            name = p.stem[len("instances_") :] if p.stem.lower().startswith("instances_") else p.stem
            split = _known_split(name)
            if split is None:
                continue
            if split in found:
                raise PruningError(f"two {split} annotation files ({found[split][0].name}, {p.name})")
            canon = {"train": "train", "val": "val", "test": "test"}[split]
            places = [root / name, root / "images" / name, root / canon, root / "images" / canon, root / "images", root]
            found[split] = (p, places)
        if not found and len(jsons) == 1:
            return "flat", {"all": (jsons[0], [root / "images", root])}
        if not found:
            raise PruningError(
                "annotations/ holds no instances_<split>.json (train, val or test) nor a lone annotations file"
            )
        if "train" not in found:
            raise PruningError("annotations/ has no train annotations (instances_train.json)")
        return "split", {k: found[k] for k in SPLIT_NAMES if k in found}
    splits = _split_folders(root)
    if splits is not None and all((d / ROBOFLOW_COCO).is_file() for d in splits.values()):
        return "split", {s: (d / ROBOFLOW_COCO, [d]) for s, d in splits.items()}
    if (root / ROBOFLOW_COCO).is_file():
        return "flat", {"all": (root / ROBOFLOW_COCO, [root / "images", root])}
    raise PruningError("no COCO layout: expected annotations/instances_<split>.json or <split>/_annotations.coco.json")


def _load_json(path: Path, shown: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise PruningError(f"{shown} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise PruningError(f"{shown} is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(doc, dict):
        raise PruningError(f"{shown}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise PruningError(f"{shown}: {key} is missing or not a list")
    return doc


def _int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _categories(doc: dict[str, Any], shown: str) -> dict[int, str]:
    cats: dict[int, str] = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or not _int(c.get("id")) or not isinstance(c.get("name"), str):
            raise PruningError(f"{shown}: a category without an integer id and a name")
        if c["id"] in cats:
            raise PruningError(f"{shown}: category id {c['id']} is given twice")
        cats[c["id"]] = c["name"]
    if not cats:
        raise PruningError(f"{shown}: categories is empty")
    return cats


def _image_file(folders: list[Path], name: str, shown: str, root: Path) -> Path:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/") or "\\" in name or "\x00" in name:
        raise PruningError(f"{shown}: image file_name {name[:60]!r} is not a relative path")
    for folder in folders:
        p = folder.joinpath(*parts)
        if p.is_file():
            return p
    for folder in folders:  # a file_name with a folder of its own ("train2017/0001.jpg")
        p = folder / parts[-1]
        if p.is_file():
            return p
    where = ", ".join(f"{_rel(f, root)}/" if f != root else "the top" for f in folders if f.is_dir())
    raise PruningError(f"{shown}: image {name[:60]!r} not found (looked in {where or 'no image folder'})")


def _coco_split(
    path: Path,
    folders: list[Path],
    root: Path,
    cat_index: dict[int, int],
    counts: BoxCounts,
    files: set[str],
    sizes: dict,
) -> list[BoxSample]:
    shown = _rel(path, root)
    doc = _load_json(path, shown)
    images: dict[int, tuple[Path, int, int]] = {}
    for im in doc["images"]:
        if not isinstance(im, dict) or not _int(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise PruningError(f"{shown}: an image entry without an integer id and a file_name")
        if im["id"] in images:
            raise PruningError(f"{shown}: image id {im['id']} is given twice")
        w, h = im.get("width"), im.get("height")
        if not (_int(w) and _int(h) and w > 0 and h > 0):
            raise PruningError(f"{shown}: image {im['id']} has no positive integer width and height")
        f = _image_file(folders, im["file_name"], shown, root)
        images[im["id"]] = (f, w, h)
        sizes[str(f)] = (w, h, shown)
    rows: dict[int, list[tuple[float, ...]]] = {i: [] for i in images}
    for a in doc["annotations"]:
        if not isinstance(a, dict):
            raise PruningError(f"{shown}: an annotation is not a JSON object")
        where = f"{shown} annotation {a.get('id', '?')}"
        if not _int(a.get("image_id")) or a["image_id"] not in images:
            raise PruningError(
                f"{where}: image_id {str(a.get('image_id'))[:20]} is not in images (labels without an image)"
            )
        if not _int(a.get("category_id")) or a["category_id"] not in cat_index:
            raise PruningError(f"{where}: category_id {str(a.get('category_id'))[:20]} is not in categories")
        if a.get("iscrowd", 0) not in (0, 1, False, True):
            raise PruningError(f"{where}: iscrowd must be 0 or 1")
        if a.get("iscrowd"):
            counts.skipped_crowd += 1
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise PruningError(f"{where}: bbox must be [x, y, width, height] in pixels")
        x, y, bw, bh = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, bw, bh)):
            raise PruningError(f"{where}: bbox holds a non-finite number")
        if bw < 0 or bh < 0:
            raise PruningError(f"{where}: negative width or height ({bw:g}, {bh:g})")
        f, w, h = images[a["image_id"]]
        unit = f"x {x:g} to {x + bw:g}, y {y:g} to {y + bh:g} in an image of {w} x {h} pixels"
        tol_x, tol_y = max(TOLERANCE, 1.0 / w), max(TOLERANCE, 1.0 / h)
        box = place_box(x / w, y / h, (x + bw) / w, (y + bh) / h, counts, where, tol_x, tol_y, unit)
        if box is not None:
            rows[a["image_id"]].append((float(cat_index[a["category_id"]]), *box))
    out: list[BoxSample] = []
    for i, (f, _, _) in images.items():
        if len(rows[i]) > MAX_OBJECTS:
            raise PruningError(f"{shown}: image {i} holds {len(rows[i])} objects, more than {MAX_OBJECTS}")
        out.append((str(f), np.array(rows[i], dtype=np.float32).reshape(-1, 5)))
        files.add(str(f))
    if not out:
        raise PruningError(f"{shown}: images is empty")
    listed = {str(f) for f, _, _ in images.values()}
    for folder in {f.parent for f, _, _ in images.values()}:
        counts.unlisted_images += sum(
            1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and str(p) not in listed
        )
    return sorted(out, key=lambda s: s[0])


def scan_coco(root: Path) -> BoxFolderIndex:
    """Index a COCO folder (module docstring)."""
    layout, parts = _coco_files(root)
    first = next(iter(parts.values()))[0] if "train" not in parts else parts["train"][0]
    cats = _categories(_load_json(first, _rel(first, root)), _rel(first, root))
    for path, _ in parts.values():
        if path != first and _categories(_load_json(path, _rel(path, root)), _rel(path, root)) != cats:
            raise PruningError(f"{_rel(path, root)}: its categories differ from those of {_rel(first, root)}")
    cat_index = {cid: k for k, cid in enumerate(sorted(cats))}
    counts, files, sizes = BoxCounts(), set[str](), dict[str, tuple[int, int, str]]()
    found = {
        split: _coco_split(p, places, root, cat_index, counts, files, sizes) for split, (p, places) in parts.items()
    }
    files.update(str(p) for p, _ in parts.values())
    seen: dict[str, str] = {}
    for split, samples in found.items():
        for image, _ in samples:
            if image in seen and seen[image] != split:
                raise PruningError(f"image {_rel(Path(image), root)} is listed in both {seen[image]} and {split}")
            seen[image] = split
    index = _index(root, "coco", layout, [cats[c] for c in sorted(cats)], found, counts, files)
    index.sizes = sizes
    return index


# --- either ---


def box_format(root: Path) -> Literal["yolo", "coco"] | None:
    """Which detection layout `root` holds (None: neither): COCO when it has annotations/ holding
    a JSON file, or a Roboflow COCO JSON; YOLO when it has labels/ beside images/ or a data YAML
    (or labels/ in its split folders). A class folder named `labels` or `annotations` of an
    image folder is not taken for one."""
    ann = root / "annotations"
    if (ann.is_dir() and any(p.suffix.lower() == ".json" for p in ann.iterdir())) or (root / ROBOFLOW_COCO).is_file():
        return "coco"
    if (root / "labels").is_dir() and ((root / "images").is_dir() or _yaml_file(root) is not None):
        return "yolo"
    splits = _split_folders(root) if root.is_dir() else None
    if splits:
        if all((d / ROBOFLOW_COCO).is_file() for d in splits.values()):
            return "coco"
        if any((d / "labels").is_dir() for d in splits.values()):
            return "yolo"
    return None


def scan_boxfolder(path: str | Path) -> BoxFolderIndex:
    """Index and check a YOLO or COCO folder (module docstring); one wrapping folder is looked
    through. PruningError, one line naming the file, for anything the checks refuse."""
    root = Path(path)
    if not root.is_dir():
        raise PruningError(f"detection folder {root} does not exist")
    root = _unwrap(root)
    fmt = box_format(root)
    if fmt is None:
        raise PruningError(
            "no detection layout: expected YOLO (images/ + labels/, data.yaml) or COCO "
            "(annotations/instances_<split>.json + images)"
        )
    return scan_coco(root) if fmt == "coco" else scan_yolo(root)


def check_image_sizes(index: BoxFolderIndex) -> None:
    """COCO: each image's header agrees with the width and height its JSON gives (the boxes
    are read in those pixels); PruningError naming the first that does not."""
    from ..segmentation.folder import image_size

    for path, (w, h, shown) in index.sizes.items():
        real = image_size(path)
        if real != (w, h):
            raise PruningError(
                f"{shown}: image {_rel(Path(path), index.root)} is {real[0]} x {real[1]} pixels, "
                f"the JSON says {w} x {h}"
            )


def boxfolder_shape(path: str | Path) -> tuple[int, int]:
    """`(in_channels, num_classes)` of a YOLO or COCO folder (every label read, the first
    training images' headers)."""
    index = scan_boxfolder(path)
    return image_channels([img for img, _ in index.train[:64]]), len(index.classes)
