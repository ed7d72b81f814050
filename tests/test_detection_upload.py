"""Detection data through `POST /v1/datasets`: a YOLO or a COCO archive is recognised, every label
checked, and recorded as a detection set with its classes, image counts and what was clipped or
skipped; each bad archive is a one-line 422 and nothing is kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pruning.detection.scenes import BOX_CLASSES, make_boxscenes, write_coco_archive, write_yolo_archive
from tests.test_datasets import archive
from tests.test_detection_data import COCO_ERRORS, SIZE, SPLITS, YOLO_ERRORS, save, unpack, write

OBJECTS = sum(len(b) for k, n in enumerate(SPLITS.values()) for b in make_boxscenes(n, SIZE, k)[1])


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
        yield client, {"Authorization": f"Bearer {app.state.store.create_token('det')}"}, settings


def _post(client, headers, name: str, body: bytes):
    return client.post("/v1/datasets", files={"file": (name, body)}, headers=headers)


def _stored(settings) -> list[str]:
    root = settings.data_dir / "datasets"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _counts(fmt: str, **changes: int) -> dict:
    base = {
        "format": fmt,
        "images": 12,
        "objects": OBJECTS,
        "images_without_objects": 0,
        "clipped": 0,
        "skipped_empty": 0,
        "skipped_crowd": 0,
        "unlisted_images": 0,
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    "writer, name, fmt",
    [(write_yolo_archive, "scenes.tar.gz", "yolo"), (write_coco_archive, "scenes.zip", "coco")],
)
def test_the_scenes_upload_as_a_detection_set(api, tmp_path, writer, name, fmt):
    client, h, settings = api
    path = writer(tmp_path / name, SPLITS, SIZE)
    r = _post(client, h, name, path.read_bytes())
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["task"], d["classes"], d["num_classes"]) == ("detection", list(BOX_CLASSES), 3)
    assert (d["layout"], d["in_channels"], d["images"]) == ("split", 3, SPLITS)
    assert d["boxes"] == _counts(fmt)
    assert client.get(f"/v1/datasets/{d['id']}", headers=h).json()["boxes"] == d["boxes"]
    kept = _stored(settings)
    assert len([p for p in kept if p.endswith(".png")]) == 12
    assert len([p for p in kept if p.endswith((".txt", ".json"))]) == (12 if fmt == "yolo" else 3)


def test_the_stored_set_reads_as_a_boxfolder_with_the_uploaded_boxes(api, tmp_path):
    from pruning.data import load_dataset
    from pruning.detection import valid

    client, h, _settings = api
    body = write_yolo_archive(tmp_path / "y.zip", SPLITS, SIZE).read_bytes()
    d = _post(client, h, "y.zip", body).json()
    data = load_dataset("boxfolder", input_size=SIZE, path=_dataset(client, d["id"]).path)
    _, boxes = make_boxscenes(3, SIZE, 2)  # the test split's seed
    for i in range(3):
        _, y = data.test[i]
        assert np.allclose(y[valid(y)].numpy(), boxes[i].numpy(), atol=1e-3)


def _dataset(client, dataset_id: int):
    from service.store.tables import Dataset

    with client.app.state.store.read() as s:
        return s.get(Dataset, dataset_id)


def test_clipped_and_skipped_boxes_are_counted_in_the_answer(api, tmp_path):
    client, h, _ = api
    root = unpack(write_yolo_archive(tmp_path / "y.tar.gz", SPLITS, SIZE), tmp_path / "y")
    write(root / "labels" / "train" / "0000.txt", "1 0.5 0.5 1.01 0.2\n2 0.3 0.3 0.0 0.1\n")
    (root / "labels" / "train" / "0001.txt").unlink()  # an image without a label file: no objects
    save(root / "images" / "train" / "notes.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    r = _post(client, h, "y.tar", archive(root, "tar", prefix="mine/"))
    assert r.status_code == 201, r.text
    _, train = make_boxscenes(6, SIZE, 0)
    objects = OBJECTS - len(train[0]) - len(train[1]) + 1
    assert r.json()["boxes"] == _counts(
        "yolo", images=13, objects=objects, images_without_objects=2, clipped=1, skipped_empty=1
    )
    assert r.json()["images"] == {"train": 7, "val": 3, "test": 3}


def test_coco_crowd_annotations_and_unlisted_images_are_counted(api, tmp_path):
    client, h, settings = api
    root = unpack(write_coco_archive(tmp_path / "c.zip", SPLITS, SIZE), tmp_path / "c")
    path = root / "annotations" / "instances_val.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["iscrowd"] = 1
    path.write_text(json.dumps(doc))
    save(root / "val" / "extra.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    r = _post(client, h, "c.tar.gz", archive(root))
    assert r.status_code == 201, r.text
    assert r.json()["boxes"] == _counts("coco", objects=OBJECTS - 1, skipped_crowd=1, unlisted_images=1)
    assert not [p for p in _stored(settings) if p.endswith("extra.png")]  # not read, not kept


def _broken_image(root):
    (root / "images" / "val" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def _coco_size(root):
    save(root / "train" / "0002.png", np.zeros((20, SIZE, 3), np.uint8))


EXTRA_YOLO = [(_broken_image, "images/val/0001.png does not decode")]
EXTRA_COCO = [(_coco_size, "instances_train.json: image train/0002.png is 32 x 20 pixels, the JSON says 32 x 32")]


@pytest.mark.parametrize(
    "fmt, spoil, words",
    [("yolo", s, w) for s, w in YOLO_ERRORS + EXTRA_YOLO] + [("coco", s, w) for s, w in COCO_ERRORS + EXTRA_COCO],
)
def test_each_bad_detection_archive_is_a_one_line_422(api, tmp_path, fmt, spoil, words):
    client, h, settings = api
    writer = write_yolo_archive if fmt == "yolo" else write_coco_archive
    root = unpack(writer(tmp_path / "a.tar.gz", SPLITS, SIZE), tmp_path / "t")
    spoil(root)
    r = _post(client, h, "bad.zip", archive(root, "zip", prefix="wrap/"))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert words in detail
    assert "\n" not in detail
    assert str(tmp_path) not in detail
    assert _stored(settings) == []  # nothing kept
    shutil.rmtree(root)


def test_the_job_spec_names_the_detection_sets():
    from pydantic import ValidationError

    from workers.config import DataSpec

    assert DataSpec(name="boxscenes").name == "boxscenes"
    assert DataSpec(name="boxfolder", path="/data/coco").path == "/data/coco"
    with pytest.raises(ValidationError, match="data set boxfolder needs a path"):
        DataSpec(name="boxfolder")


@pytest.mark.slow
def test_end_to_end_detection_job_on_an_uploaded_yolo_archive(tmp_path):
    """Through the real server: upload scenes as a YOLO archive, train the zoo's YOLO-style
    detector on them, prune it to half its FLOPs (fine-tuned by distillation from the unpruned
    detector), and read mAP before and after, the per-class APs and the previews."""
    from service.client import Client
    from service.devserver import ServerProcess

    path = write_yolo_archive(tmp_path / "scenes.tar.gz", {"train": 48, "val": 16, "test": 16}, size=64)
    srv = ServerProcess(tmp_path / "data", SECATEURS_DATA_WORKERS="0").start()
    try:
        token = srv.cli("token", "create", "--team", "det").stdout.strip().splitlines()[-1]
        client = Client(srv.url, token)
        dataset = client.upload_dataset(path)
        assert dataset["task"] == "detection"
        job = client.submit(
            {
                "model": {"zoo": "yolo_nano", "args": {"width": 0.5}},
                "data": {"upload": dataset["id"], "input_size": 64},
                "task": "detection",
                "target": {"flops": 0.5},
                "strategy": {"name": "uniform"},
                "train": {"epochs": 1, "batch_size": 16},
                "finetune": {"max_steps": 4},
                "search": {"max_candidates": 2},
                "onnx": False,
            }
        )
        done = client.wait(job["id"], poll=0.5, timeout=500)
        assert done["status"] == "succeeded", done.get("error")
        files = client.download(job["id"], tmp_path / "out")
        report = json.loads((tmp_path / "out" / "report.json").read_text())
    finally:
        srv.stop()
    assert (report["task"], report["score_name"], report["data"]) == ("detection", "map", "boxfolder")
    assert report["dataset"]["classes"] == list(BOX_CLASSES)
    assert report["flops_after"] <= 0.5 * report["flops_before"]
    extras = report["score_extras"]
    # COCO's mAP@[.5:.95] averages APs at ten IoU thresholds, the loosest being 0.5's
    assert 0.0 <= report["accuracy_after"] <= extras["map50"] <= 1.0
    assert set(extras) - {"map50"} <= {f"ap_{k}" for k in range(len(BOX_CLASSES))}
    # the same per-class APs, named by the archive's classes
    named = {f"ap_{BOX_CLASSES.index(c)}": v for c, v in report["class_scores"]["ap"].items()}
    assert named == {k: v for k, v in extras.items() if k.startswith("ap_")}
    assert set(report["class_scores_before"]["ap"]) <= set(BOX_CLASSES)
    assert {p.relative_to(tmp_path / "out").as_posix() for p in files} >= {f"previews/{i}.png" for i in range(6)}
