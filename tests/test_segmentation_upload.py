"""Segmentation data through `POST /v1/datasets`: a mask-folder archive is recognised, checked
pair by pair and recorded as a segmentation set; each bad input is a one-line 422."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pruning.segmentation.scenes import SCENE_CLASSES, write_scenes_archive
from tests.test_datasets import archive


@pytest.fixture
def api(tmp_path):
    """A client on a fresh app (scheduler off) with small archive limits and a team's headers."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        scheduler=False,
        max_dataset_upload_bytes=4_000_000,
        max_dataset_bytes=4_000_000,
        max_dataset_files=400,
        max_image_pixels=100_000,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {app.state.store.create_token('seg')}"}, settings


def _post(client, headers, name: str, body: bytes):
    return client.post("/v1/datasets", files={"file": (name, body)}, headers=headers)


def _refused(r, words: str) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert words in detail, detail
    assert "\n" not in detail
    assert "/tmp" not in detail
    assert "Traceback" not in detail


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _tree(root: Path, n: int = 4, size: int = 12, classes: int = 3) -> Path:
    """A flat mask folder: images/NNN.png (RGB) and masks/NNN.png (indices 0..classes-1)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(root / "images" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        _save(root / "masks" / f"{i:03d}.png", rng.integers(0, classes, (size, size), dtype=np.uint8))
    return root


def test_the_scenes_archive_uploads_as_a_segmentation_set(api, tmp_path):
    client, h, _settings = api
    path = write_scenes_archive(tmp_path / "scenes.tar.gz", {"train": 8, "val": 4, "test": 4}, size=16)
    r = _post(client, h, "scenes.tar.gz", path.read_bytes())
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["task"] == "segmentation"
    assert d["classes"] == list(SCENE_CLASSES)
    assert d["num_classes"] == 4
    assert (d["layout"], d["in_channels"], d["images"]) == ("split", 3, {"train": 8, "val": 4, "test": 4})
    assert client.get(f"/v1/datasets/{d['id']}", headers=h).json()["task"] == "segmentation"


def test_a_flat_wrapped_folder_without_classes_txt_counts_its_classes(api, tmp_path):
    client, h, settings = api
    root = _tree(tmp_path / "t", classes=3)
    (root / "notes.txt").write_text("not read")
    r = _post(client, h, "flat.zip", archive(root, "zip", prefix="mydata/"))
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["task"], d["layout"], d["images"]) == ("segmentation", "flat", {"train": 4})
    assert d["classes"] == ["0", "1", "2"]
    stored = sorted(p.name for p in (settings.data_dir / "datasets").rglob("*") if p.is_file())
    assert "notes.txt" not in stored
    assert "classes.txt" in stored


def test_image_folders_are_still_classification_sets(api, tmp_path):
    from tests.test_datasets import write_tree

    client, h, _ = api
    r = _post(client, h, "digits.tar.gz", archive(write_tree(tmp_path / "d", "split", classes=3)))
    assert r.status_code == 201, r.text
    assert r.json()["task"] == "classification"


def _bad_size(root: Path) -> None:
    _save(root / "masks" / "001.png", np.zeros((6, 12), np.uint8))


def _lonely_image(root: Path) -> None:
    _save(root / "images" / "extra.png", np.zeros((12, 12, 3), np.uint8))


def _lonely_mask(root: Path) -> None:
    _save(root / "masks" / "zzz.png", np.zeros((12, 12), np.uint8))


def _index_too_high(root: Path) -> None:
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    m = np.zeros((12, 12), np.uint8)
    m[3, 4] = 5
    _save(root / "masks" / "002.png", m)


def _rgb_mask(root: Path) -> None:
    _save(root / "masks" / "000.png", np.zeros((12, 12, 3), np.uint8))


def _broken_mask(root: Path) -> None:
    (root / "masks" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def _jpeg_mask(root: Path) -> None:
    (root / "masks" / "000.png").unlink()
    _save(root / "masks" / "000.jpg", np.zeros((12, 12), np.uint8))


def _no_masks_folder(root: Path) -> None:
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()


@pytest.mark.parametrize(
    "spoil, words",
    [
        (_bad_size, "mask masks/001.png is 12 x 6 pixels, its image images/001.png 12 x 12"),
        (_lonely_image, "1 image(s) in images/ have no mask in masks/ (first: extra.png)"),
        (_lonely_mask, "1 mask(s) in masks/ have no image in images/ (first: zzz.png)"),
        (_index_too_high, "mask masks/002.png holds class index 5, but classes.txt names 3 classes"),
        (_rgb_mask, "has mode RGB; masks hold one class index per pixel"),
        (_broken_mask, "masks/003.png does not decode"),
        (_jpeg_mask, "mask masks/000.jpg is not a .png"),
        (_no_masks_folder, "masks/ is missing"),
    ],
)
def test_each_bad_mask_folder_is_a_one_line_422(api, tmp_path, spoil, words):
    client, h, settings = api
    root = _tree(tmp_path / "t")
    spoil(root)
    _refused(_post(client, h, "bad.tar.gz", archive(root)), words)
    assert not [p for p in (settings.data_dir / "datasets").rglob("*") if p.is_file()]  # nothing kept


def _tar(names: list[str], dirs: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for n in names:
            info = tarfile.TarInfo(n)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_a_mask_folder_without_images_is_a_one_line_422(api):
    client, h, _ = api
    _refused(_post(client, h, "empty.tar.gz", _tar(["images/README"], ["images", "masks"])), "no images in images/")
    split = _tar([], ["d/train/images", "d/train/masks", "d/val/images", "d/val/masks"])
    _refused(_post(client, h, "empty.tar.gz", split), "no images in train/images/")
