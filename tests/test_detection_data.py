"""Detection data: the box scenes' boxes match their pixels, the YOLO and COCO writers and readers
agree, the transforms keep boxes on their objects, and every label error is a one-line refusal
naming its file (the upload tests post the same broken trees)."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pruning.detection import PAD, valid
from pruning.detection.folder import BoxFolderIndex, check_image_sizes, scan_boxfolder
from pruning.detection.scenes import (
    BOX_CLASSES,
    MIN_VISIBLE_SHARE,
    make_boxscenes,
    visible_boxes,
    write_coco_archive,
    write_yolo_archive,
)
from pruning.detection.transforms import eval_sample, flip_boxes, train_sample
from pruning.errors import PruningError

SPLITS = {"train": 6, "val": 3, "test": 3}
SIZE = 32


def unpack(archive: Path, dest: Path) -> Path:
    """An archive written by the scenes' writers, unpacked; returns the wrapped folder."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    return dest / "boxscenes"


@pytest.fixture
def yolo(tmp_path) -> Path:
    return unpack(write_yolo_archive(tmp_path / "y.tar.gz", SPLITS, SIZE), tmp_path / "y")


@pytest.fixture
def coco(tmp_path) -> Path:
    return unpack(write_coco_archive(tmp_path / "c.zip", SPLITS, SIZE), tmp_path / "c")


def in_pixels(index: BoxFolderIndex, split: str) -> list[torch.Tensor]:
    part = getattr(index, split)
    return [torch.from_numpy(b) * torch.tensor([1.0, SIZE, SIZE, SIZE, SIZE]) for _, b in part]


# --- the scenes ---


def test_a_box_covers_only_the_visible_pixels_and_a_hidden_object_gets_none():
    outlines = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    outlines[0, 0, 2:10, 2:10] = True  # a square, kind 2 ...
    outlines[1, 0, 0:16, 6:16] = True  # ... whose right part a later disk (kind 1) covers
    outlines[2, 0, 3:5, 7:9] = True  # a triangle (kind 3) drawn last, inside the disk
    kinds = torch.tensor([[2], [1], [3]])
    (rows,) = visible_boxes(outlines, kinds)
    # the square keeps columns 2..5 (its box ends at the disk); the triangle's 4 pixels, all
    # visible, are under MIN_VISIBLE_PIXELS: no box
    assert rows.tolist() == [[1.0, 2.0, 2.0, 6.0, 10.0], [0.0, 6.0, 0.0, 16.0, 16.0]]
    outlines[1, 0, 0:16, 3:16] = True  # the disk now leaves a 1-column sliver of the square
    (rows,) = visible_boxes(outlines, kinds)
    assert rows[:, 0].tolist() == [0.0]  # the square (8 of 64 pixels visible) is dropped


def test_scene_boxes_are_the_visible_pixels_of_each_drawn_shape():
    from pruning.segmentation.scenes import draw_scenes, make_scenes, to_uint8

    images, outlines, kinds = draw_scenes(40, SIZE, 3)
    boxed_images, boxes = make_boxscenes(40, SIZE, 3)
    assert torch.equal(boxed_images, to_uint8(images))
    assert torch.equal(boxed_images, make_scenes(40, SIZE, 3)[0])  # the segmentation scenes' very images
    dropped = 0
    for i in range(40):
        expected = []
        for slot in range(outlines.shape[0]):
            seen = outlines[slot, i].numpy() & ~outlines[slot + 1 :, i].numpy().any(axis=0)
            if seen.sum() < max(6, MIN_VISIBLE_SHARE * outlines[slot, i].sum()):
                dropped += int(outlines[slot, i].any())
                continue
            ys, xs = np.nonzero(seen)
            expected.append([kinds[slot, i] - 1, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert boxes[i].tolist() == np.array(expected, dtype=np.float32).reshape(-1, 5).tolist()
        assert len(boxes[i]) >= 1  # the shape drawn last is always whole
    assert 0 < dropped < 10  # a few shapes are hidden, most are not


def test_boxscenes_load_as_padded_targets():
    from pruning.data import DETECTION_DATASETS, data_task, load_dataset, make_loader

    assert DETECTION_DATASETS == ("boxscenes", "boxfolder")
    assert [data_task(n) for n in ("boxscenes", "boxfolder", "maskfolder", "imagefolder")] == [
        "detection",
        "detection",
        "segmentation",
        "classification",
    ]
    d = load_dataset("boxscenes", input_size=32, subset=16)
    assert (d.name, d.num_classes, d.classes, d.in_channels) == ("boxscenes", 3, list(BOX_CLASSES), 3)
    x, y = next(iter(make_loader(d.val, batch_size=8)))
    assert x.shape == (8, 3, 32, 32)
    assert y.shape == (8, 3, 5)  # at most 3 shapes a scene
    _, boxes = make_boxscenes(100, 32, 1)  # the val split's seed
    for i in range(8):
        assert torch.allclose(y[i][valid(y[i])], boxes[i])
        assert (y[i][~valid(y[i])] == PAD).all()
    assert d.train.plain().fingerprint() == d.train.plain().fingerprint() != d.train.fingerprint()


# --- the writers and readers agree ---


def test_yolo_and_coco_archives_round_trip_to_the_scenes_boxes(yolo, coco):
    y, c = scan_boxfolder(yolo), scan_boxfolder(coco)
    assert (y.format, c.format, y.layout, c.layout) == ("yolo", "coco", "split", "split")
    assert y.classes == c.classes == list(BOX_CLASSES)
    for k, split in enumerate(SPLITS):
        _, boxes = make_boxscenes(SPLITS[split], SIZE, k)
        for got in (in_pixels(y, split), in_pixels(c, split)):
            assert len(got) == len(boxes)
            for a, b in zip(got, boxes, strict=True):
                assert torch.allclose(a, b, atol=1e-3)
    assert y.counts.as_dict() == c.counts.as_dict()
    assert y.counts.images == 12
    assert y.counts.clipped == y.counts.skipped_empty == 0
    check_image_sizes(c)


def test_a_boxfolder_loads_with_its_boxes_scaled_to_the_input(yolo):
    from pruning.data import load_dataset

    d = load_dataset(f"boxfolder:{yolo}", input_size=64)
    assert (d.name, d.num_classes, d.classes) == ("boxfolder", 3, list(BOX_CLASSES))
    assert d.val.streams
    assert d.train.augment
    assert not d.val.augment
    _, boxes = make_boxscenes(3, SIZE, 1)
    for i in range(3):
        x, y = d.val[i]
        assert x.shape == (3, 64, 64)
        rows = y[valid(y)]
        assert torch.allclose(rows[:, 1:], boxes[i][:, 1:] * 2, atol=1e-3)  # 32 px scenes at 64 px
        assert torch.equal(rows[:, 0], boxes[i][:, 0])


def test_a_flat_yolo_folder_is_split_by_seed_and_takes_names_from_classes_txt(tmp_path):
    root = tmp_path / "flat"
    rng = np.random.default_rng(0)
    for i in range(20):
        save(root / "images" / f"{i:03d}.png", rng.integers(0, 255, (24, 20, 3), dtype=np.uint8))
        if i % 4:  # every fourth image has no label file: no objects
            write(root / "labels" / f"{i:03d}.txt", f"{i % 2} 0.5 0.5 0.4 0.3\n")
    write(root / "classes.txt", "cat\ndog\n")
    from pruning.data import load_dataset

    d = load_dataset(f"boxfolder:{root}", input_size=40, seed=1)
    assert d.classes == ["cat", "dog"]
    assert [len(d.train), len(d.val), len(d.test)] == [14, 3, 3]
    index = scan_boxfolder(root)
    assert index.layout == "flat"
    assert (index.counts.images, index.counts.objects, index.counts.images_without_objects) == (20, 15, 5)


def test_coco_category_ids_map_to_contiguous_classes_in_id_order(coco):
    path = coco / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    new_ids = {1: 11, 2: 3, 3: 7}  # disk 11, square 3, triangle 7
    for cat in doc["categories"]:
        cat["id"] = new_ids[cat["id"]]
    for a in doc["annotations"]:
        a["category_id"] = new_ids[a["category_id"]]
    doc["annotations"][0]["iscrowd"] = 1
    path.write_text(json.dumps(doc))
    for split in ("val", "test"):
        (coco / "annotations" / f"instances_{split}.json").unlink()
    index = scan_boxfolder(coco)
    assert index.classes == ["square", "triangle", "disk"]
    _, boxes = make_boxscenes(6, SIZE, 0)
    remap = {0.0: 2.0, 1.0: 0.0, 2.0: 1.0}
    got = in_pixels(index, "train")
    assert got[0][:, 0].tolist() == [remap[c] for c in boxes[0][1:, 0].tolist()]  # the crowd one skipped
    assert got[1][:, 0].tolist() == [remap[c] for c in boxes[1][:, 0].tolist()]
    assert index.counts.skipped_crowd == 1
    assert index.layout == "split"
    assert index.val is None


def test_data_yaml_names_may_be_a_mapping(yolo):
    write(yolo / "data.yaml", "train: images/train\nnames:\n  0: a\n  2: c\n  1: b\n")
    assert scan_boxfolder(yolo).classes == ["a", "b", "c"]


def test_boxes_reaching_just_past_the_image_are_clipped_and_empty_ones_skipped(yolo):
    lab = yolo / "labels" / "train" / "0000.txt"
    write(lab, "1 0.5 0.5 1.01 0.2\n2 0.3 0.3 0.0 0.1\n")
    index = scan_boxfolder(yolo)
    (_path, rows) = index.train[0]
    assert rows.tolist() == [[1.0, 0.0, pytest.approx(0.4), 1.0, pytest.approx(0.6)]]
    assert (index.counts.clipped, index.counts.skipped_empty) == (1, 1)


# --- transforms keep boxes on their objects ---


def _one_object(h: int = 40, w: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark image with one white rectangle (columns 5..19, rows 10..29) and its box."""
    x = torch.zeros(3, h, w)
    x[:, 10:30, 5:20] = 1.0
    return x, torch.tensor([[1.0, 5.0, 10.0, 20.0, 30.0]])


def _white_box(x: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(x[0] > 0.5, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def test_a_flip_mirrors_the_box_with_the_image():
    x, boxes = _one_object()
    fx, fb = flip_boxes(x, boxes)
    assert fb.tolist() == [[1.0, 30.0, 10.0, 45.0, 30.0]]
    assert _white_box(fx) == fb[0, 1:].tolist()


def test_training_crops_keep_every_box_on_its_object():
    x, boxes = _one_object()
    _ex, eb = eval_sample(x, boxes, 32)
    assert torch.allclose(eb, torch.tensor([[1.0, 3.2, 8.0, 12.8, 24.0]]))
    flipped = dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        tx, tb = train_sample(x, boxes, 32)
        assert tx.shape == (3, 32, 32)
        if len(tb) == 0:
            dropped += 1
            continue
        assert len(tb) == 1
        box = tb[0, 1:]
        assert (box >= 0).all()
        assert (box <= 32).all()
        # the white pixels visible in the crop are the box (to the pixel the resampling blurs)
        assert torch.allclose(torch.tensor(_white_box(tx)), box, atol=1.01), (seed, _white_box(tx), box)
        flipped += bool(box[0] > 16)
    assert 5 < flipped < 35  # flipped about half the time
    assert dropped < 20


def test_a_box_mostly_cropped_away_is_dropped():
    x = torch.zeros(3, 32, 32)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0], [1.0, 8.0, 8.0, 24.0, 24.0]])  # a tiny one in a corner
    kept = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _, tb = train_sample(x, boxes, 32)
        kept.update(tb[:, 0].tolist())
        w, h = tb[:, 3] - tb[:, 1], tb[:, 4] - tb[:, 2]
        assert (w >= 2).all()
        assert (h >= 2).all()
    assert 1.0 in kept


# --- every label error is one line naming its file ---


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _label(root: Path, text: str, name: str = "0001") -> None:
    write(root / "labels" / "train" / f"{name}.txt", text)


def _coco_doc(root: Path, change) -> None:
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


YOLO_ERRORS = [
    (lambda r: _label(r, "0 0.9 0.5 0.4 0.2\n"), "labels/train/0001.txt line 1: box outside the image"),
    (lambda r: _label(r, "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"), "labels/train/0001.txt line 2: class 7 unknown"),
    (lambda r: _label(r, "0 0.5 0.5 0.2\n"), "labels/train/0001.txt line 1: expected 5 values 'class cx cy w h'"),
    (lambda r: _label(r, "0 half 0.5 0.2 0.2\n"), "labels/train/0001.txt line 1: 'half' is not a number"),
    (lambda r: _label(r, "1.5 0.5 0.5 0.2 0.2\n"), "labels/train/0001.txt line 1: class 1.5 is not a class index"),
    (lambda r: _label(r, "0 0.5 0.5 0.1 0.1\n", "stray"), "label file(s) in labels/train/ have no image"),
    (lambda r: write(r / "data.yaml", "names: [a, b\n"), "data.yaml is not valid YAML"),
    (lambda r: write(r / "data.yaml", "nc: 4\nnames: [a, b, c]\n"), "data.yaml: nc is 4 but names: lists 3"),
    (lambda r: (r / "labels" / "val").rename(r / "labels" / "other"), "images/val/ has no labels/val/"),
]
COCO_ERRORS = [
    (
        lambda r: (r / "annotations" / "instances_train.json").write_text('{"images": ['),
        "annotations/instances_train.json is not valid JSON",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["annotations"][2].update(category_id=9)),
        "annotations/instances_train.json annotation 3: category_id 9 is not in categories",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["annotations"][2].update(bbox=[20, 4, 16, 8])),
        "annotations/instances_train.json annotation 3: box outside the image (x 20 to 36",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["annotations"][0].update(image_id=999)),
        "annotation 1: image_id 999 is not in images (labels without an image)",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["annotations"][0].update(image_id=[1])),
        "annotation 1: image_id [1] is not in images",
    ),
    (
        lambda r: (r / "train" / "0003.png").unlink(),
        "annotations/instances_train.json: image '0003.png' not found",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["annotations"][1].update(bbox=[1, 2, 3])),
        "annotation 2: bbox must be [x, y, width, height] in pixels",
    ),
    (
        lambda r: _coco_doc(r, lambda d: d["categories"].pop()),
        "annotations/instances_val.json: its categories differ",
    ),
]


@pytest.mark.parametrize("spoil, words", YOLO_ERRORS)
def test_each_yolo_label_error_is_one_line_naming_the_file(yolo, spoil, words):
    spoil(yolo)
    with pytest.raises(PruningError) as err:
        scan_boxfolder(yolo)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    assert str(yolo) not in str(err.value)


@pytest.mark.parametrize("spoil, words", COCO_ERRORS)
def test_each_coco_label_error_is_one_line_naming_the_file(coco, spoil, words):
    spoil(coco)
    with pytest.raises(PruningError) as err:
        scan_boxfolder(coco)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    assert str(coco) not in str(err.value)


def test_a_coco_image_of_another_size_than_its_json_says_is_refused(coco):
    save(coco / "train" / "0002.png", np.zeros((20, SIZE, 3), np.uint8))
    with pytest.raises(PruningError, match=r"instances_train.json: image train/0002.png is 32 x 20 pixels, the JSON"):
        check_image_sizes(scan_boxfolder(coco))


def test_an_image_folder_with_a_class_named_labels_is_no_detection_set(tmp_path):
    from pruning.detection.folder import box_format

    for name in ("labels", "annotations", "cats"):
        save(tmp_path / name / "0.png", np.zeros((8, 8, 3), np.uint8))
    assert box_format(tmp_path) is None
    write(tmp_path / "data.yaml", "names: [a]\n")
    assert box_format(tmp_path) == "yolo"
