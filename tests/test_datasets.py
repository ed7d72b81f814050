"""User data in: the ImageFolder reader (both layouts, streamed from disk, augmentation and a
normalisation measured once), `POST /v1/datasets` (safe extraction, per-team storage, every
refusal a 4xx with one line) and a job on an uploaded archive through REST."""

from __future__ import annotations

import gc
import io
import json
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pruning.data import calibration_batches, load_dataset, make_loader, sample_fingerprint, without_augmentation
from pruning.errors import PruningError
from pruning.imagefolder import (
    NORM_SAMPLE,
    ImageFolderSet,
    Normalization,
    eval_tensor,
    imagefolder_shape,
    scan_imagefolder,
)

PER_CLASS = 12  # digits images per class and split in the generated trees


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 16).clip(0, 255).astype(np.uint8), d.target


def write_tree(
    root: Path, layout: str = "split", classes: int = 3, per_class: int = PER_CLASS, rgb: bool = False
) -> Path:
    """Digits as PNG files: `flat` (<class>/*.png) or `split` (train/<class>/ + val/<class>/,
    with per_class // 3 validation images each). Returns the root."""
    images, labels = _digit_images()
    for c in range(classes):
        picked = images[labels == c][:per_class]
        n_val = per_class // 3 if layout == "split" else 0
        for i, img in enumerate(picked):
            split = ("val" if i < n_val else "train") if layout == "split" else ""
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            pic = Image.fromarray(np.kron(img, np.ones((2, 2), dtype=np.uint8)), "L")  # 16x16
            (pic.convert("RGB") if rgb else pic).save(folder / f"{i:03d}.png")
    return root


# --- the reader ---


def test_flat_layout_splits_by_seed_into_disjoint_parts(tmp_path):
    root = write_tree(tmp_path / "flat", "flat", classes=3, per_class=20)
    data = load_dataset("imagefolder", path=root, input_size=16, seed=0)
    assert (data.num_classes, data.in_channels, data.classes) == (3, 1, ["digit0", "digit1", "digit2"])
    files = [{f for f, _ in part.samples} for part in (data.train, data.val, data.test)]
    assert [len(f) for f in files] == [42, 9, 9]
    assert not (files[0] & files[1])
    assert not (files[0] & files[2])
    assert not (files[1] & files[2])
    again = load_dataset("imagefolder", path=root, input_size=16, seed=0)
    assert again.val.samples == data.val.samples
    other = load_dataset("imagefolder", path=root, input_size=16, seed=1)
    assert other.val.samples != data.val.samples
    for path, label in data.train.samples:  # labels follow the class folders
        assert Path(path).parent.name == data.classes[label]


def test_split_layout_keeps_the_given_validation_folder(tmp_path):
    root = write_tree(tmp_path / "split", "split", classes=3)
    data = load_dataset("imagefolder", path=root, input_size=16)
    assert data.classes == ["digit0", "digit1", "digit2"]
    assert all("/train/" in f for f, _ in data.train.samples)
    assert all("/val/" in f for f, _ in data.val.samples)
    assert len(data.train) == 3 * 8
    assert len(data.val) == 3 * 4
    assert data.test is data.val  # no test/: the validation images are tested on
    assert sorted({y for _, y in data.val.samples}) == [0, 1, 2]
    # a test/ folder is the test split; validation stays val/
    for f, y in data.val.samples[:3]:
        dest = root / "test" / data.classes[y]
        dest.mkdir(parents=True, exist_ok=True)
        Image.open(f).save(dest / f"t-{Path(f).name}")
    with_test = load_dataset("imagefolder", path=root, input_size=16)
    assert len(with_test.test) == 3
    assert all("/test/" in f for f, _ in with_test.test.samples)
    assert len(with_test.val) == 12


def test_split_layout_without_val_splits_train_by_seed(tmp_path):
    root = write_tree(tmp_path / "t", "flat", classes=2, per_class=20)
    (tmp_path / "only-train").mkdir()
    os.rename(root, tmp_path / "only-train" / "train")
    data = load_dataset("imagefolder", path=tmp_path / "only-train", input_size=16)
    assert data.classes == ["digit0", "digit1"]
    assert (len(data.train), len(data.val), len(data.test)) == (28, 6, 6)


def test_reader_refusals_name_the_problem(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(PruningError, match="no images"):
        load_dataset("imagefolder", path=tmp_path / "empty")
    one = write_tree(tmp_path / "one", "flat", classes=1)
    with pytest.raises(PruningError, match="one sub-folder per class"):
        load_dataset("imagefolder", path=one)
    odd = write_tree(tmp_path / "odd", "split", classes=2)
    (odd / "val" / "digit7").mkdir()
    with pytest.raises(PruningError, match="'digit7' that train/ lacks"):
        scan_imagefolder(odd)


def test_rgb_images_give_three_channels_and_gray_ones_one(tmp_path):
    gray = write_tree(tmp_path / "gray", "flat", classes=2)
    rgb = write_tree(tmp_path / "rgb", "flat", classes=2, rgb=True)
    assert imagefolder_shape(gray) == (1, 2)
    assert imagefolder_shape(rgb) == (3, 2)
    data = load_dataset("imagefolder", path=rgb, input_size=16)
    x, _ = data.train[0]
    assert x.shape == (3, 16, 16)
    assert data.in_channels == 3
    assert len(data.normalization.mean) == 3


def test_dataset_streams_from_disk_and_holds_no_decoded_images(tmp_path):
    root = write_tree(tmp_path / "s", "split", classes=3)
    data = load_dataset("imagefolder", path=root, input_size=16)
    assert isinstance(data.train, ImageFolderSet)
    # the set holds file names, not tensors
    held = [v for v in vars(data.train).values() if isinstance(v, torch.Tensor)]
    assert held == []
    assert all(isinstance(f, str) for f, _ in data.train.samples)
    # decoding reads the file each time: a file changed on disk shows at the next access
    path, _ = data.val.samples[0]
    before = data.val[0][0].clone()
    Image.new("L", (16, 16), 255).save(path)
    after = data.val[0][0]
    assert not torch.equal(before, after)
    assert torch.allclose(after, torch.full_like(after, (1.0 - data.normalization.mean[0]) / data.normalization.std[0]))
    # a training loader decodes in worker processes
    os.environ["SECATEURS_DATA_WORKERS"] = "2"
    try:
        loader = make_loader(data.train, 8, shuffle=True)
        assert loader.num_workers == 2
        xb, yb = next(iter(loader))
        assert xb.shape == (8, 1, 16, 16)
        assert yb.dtype == torch.long
        del loader
        gc.collect()
    finally:
        del os.environ["SECATEURS_DATA_WORKERS"]
    digits = load_dataset("digits", input_size=16)
    assert make_loader(digits.train, 8).num_workers == 0  # in-memory sets load in-process


def test_augmented_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    """The worker count follows the machine's CPU count; the training batches (order and random
    augmentation) must not, or the same job gives other numbers on another machine."""
    root = write_tree(tmp_path / "w", "split", classes=2)
    data = load_dataset("imagefolder", path=root, input_size=16)

    def two_epochs(workers: str, seed: int = 3) -> list[torch.Tensor]:
        os.environ["SECATEURS_DATA_WORKERS"] = workers
        try:
            loader = make_loader(data.train, 4, shuffle=True, seed=seed)
            assert loader.num_workers == int(workers)
            torch.manual_seed(123 + int(workers))  # the global generator's state must not matter either
            batches = [x for _ in range(2) for x, _ in loader]
            del loader
            gc.collect()
            return batches
        finally:
            del os.environ["SECATEURS_DATA_WORKERS"]

    alone = two_epochs("0")
    assert len(alone) == 2 * len(make_loader(data.train, 4))
    for other in (two_epochs("1"), two_epochs("2")):
        assert all(torch.equal(a, b) for a, b in zip(alone, other, strict=True))
    # the draws are random: the two epochs differ, and so does another seed
    half = len(alone) // 2
    assert not all(torch.equal(a, b) for a, b in zip(alone[:half], alone[half:], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(alone, two_epochs("0", seed=4), strict=True))


def test_training_augments_and_evaluation_is_resize_and_centre_crop(tmp_path):
    root = write_tree(tmp_path / "a", "split", classes=2)
    data = load_dataset("imagefolder", path=root, input_size=16)
    torch.manual_seed(0)
    draws = torch.stack([data.train[0][0] for _ in range(12)])
    assert len({d.numpy().tobytes() for d in draws}) > 1  # random crops and flips
    plain = without_augmentation(data.train)
    assert torch.equal(plain[0][0], plain[0][0])  # evaluation view: the same image each time
    assert torch.equal(data.val[0][0], data.val[0][0])
    # every augmented draw is a shifted and/or mirrored window of the padded evaluation image
    base = plain[0][0]
    zero = (0 - data.normalization.mean[0]) / data.normalization.std[0]
    padded = torch.nn.functional.pad(base, (2, 2, 2, 2), value=zero)
    windows = [padded[:, t : t + 16, s : s + 16] for t in range(5) for s in range(5)]
    windows += [w.flip(-1) for w in windows]
    assert all(any(torch.allclose(d, w, atol=1e-6) for w in windows) for d in draws)
    # a calibration batch comes without augmentation and repeats
    a, b = calibration_batches(data.train, 1, 8, seed=3), calibration_batches(data.train, 1, 8, seed=3)
    assert torch.equal(a[0][0], b[0][0])
    # the cache key of a set read from disk ignores random draws
    assert sample_fingerprint(data.train) == sample_fingerprint(data.train)


def test_large_inputs_take_a_random_resized_crop_and_a_centre_crop(tmp_path):
    folder = tmp_path / "big"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), "RGB").save(folder / c / f"{i}.jpg")
    data = load_dataset("imagefolder", path=folder, input_size=96, augment=True)
    x, _ = data.train[0]
    assert x.shape == (3, 96, 96)
    # evaluation: shorter side to 96 / 0.875 = 110, centre 96 x 96 crop
    path = data.val.samples[0][0]
    img = Image.open(path).convert("RGB").resize((147, 110), Image.Resampling.BILINEAR)
    expect = torch.from_numpy(np.asarray(img.crop((25, 7, 121, 103)), dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(eval_tensor(path, 96, 3), expect)
    no_aug = load_dataset("imagefolder", path=folder, input_size=96, augment=False)
    assert torch.equal(no_aug.train[0][0], no_aug.train[0][0])


def test_normalisation_is_measured_on_training_images_and_reused(tmp_path):
    root = write_tree(tmp_path / "n", "split", classes=3)
    data = load_dataset("imagefolder", path=root, input_size=16)
    pixels = torch.stack([eval_tensor(f, 16, 1) for f, _ in data.train.samples])
    assert len(data.train) <= NORM_SAMPLE
    assert data.normalization.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-5)
    assert data.normalization.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-5)
    standardised = torch.stack([without_augmentation(data.train)[i][0] for i in range(len(data.train))])
    assert float(standardised.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(standardised.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # a stored normalisation is used as given (a resumed job), on every split
    stored = Normalization((0.5,), (0.25,))
    again = load_dataset("imagefolder", path=root, input_size=16, normalization=stored)
    assert again.normalization == stored
    assert again.val.normalization == stored
    raw = eval_tensor(again.val.samples[0][0], 16, 1)
    assert torch.allclose(again.val[0][0], (raw - 0.5) / 0.25)
    assert Normalization.from_dict(data.describe()["normalization"]) == data.normalization
    with pytest.raises(PruningError, match="3 channels, the images 1"):
        load_dataset("imagefolder", path=root, input_size=16, normalization=Normalization((0, 0, 0), (1, 1, 1)))


def test_built_in_sets_report_their_normalisation(digits):
    facts = digits.describe()
    assert facts["normalization"]["mean"][0] == pytest.approx(0.3053, abs=1e-3)
    assert facts["sizes"] == {"train": 1079, "val": 359, "test": 359}
    assert float(digits.train.tensors[0].mean()) == pytest.approx(0.0, abs=0.05)


def archive(root: Path, kind: str = "tar.gz", prefix: str = "") -> bytes:
    """The tree under `root` as a .tar, .tar.gz or .zip, member names under `prefix`."""
    buf = io.BytesIO()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, prefix + p.relative_to(root).as_posix())
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as t:
            for p in files:
                t.add(p, prefix + p.relative_to(root).as_posix())
    return buf.getvalue()


__all__ = ["archive", "write_tree"]


def test_job_stores_the_data_facts_and_a_resumed_run_reuses_its_normalisation(tmp_path):
    from workers.config import JobConfig
    from workers.pipeline import DATA_FACTS, prepare
    from workers.sink import JobSink

    root = write_tree(tmp_path / "tree", "split", classes=3)
    cfg = JobConfig.model_validate(
        {
            "model": {"zoo": "convnet"},
            "data": {"name": "imagefolder", "path": str(root), "input_size": 16},
            "target": {"flops": 0.5},
            "strategy": {"name": "uniform"},
            "train": {"epochs": 0.1},
        }
    )
    out = tmp_path / "out"
    out.mkdir()
    prep = prepare(cfg, out, JobSink(), False, torch.device("cpu"))
    facts = json.loads((out / DATA_FACTS).read_text())
    assert facts["classes"] == ["digit0", "digit1", "digit2"]
    assert facts["in_channels"] == 1
    assert facts["normalization"] == prep.data.normalization.as_dict()
    assert facts["sizes"] == {"train": 24, "val": 12, "test": 12}
    # a resumed run takes the stored normalisation instead of measuring again
    facts["normalization"] = {"mean": [0.25], "std": [0.5]}
    (out / DATA_FACTS).write_text(json.dumps(facts))
    resumed = prepare(cfg, out, JobSink(), True, torch.device("cpu"))
    assert resumed.data.normalization == Normalization((0.25,), (0.5,))
    fresh = prepare(cfg, out, JobSink(), False, torch.device("cpu"))
    assert fresh.data.normalization == prep.data.normalization


# --- POST /v1/datasets ---


@pytest.fixture
def api(tmp_path):
    """A client on a fresh app (scheduler off) with small archive limits, two teams' headers."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        scheduler=False,
        max_dataset_upload_bytes=2_000_000,
        max_dataset_bytes=1_000_000,
        max_dataset_files=200,
        max_image_pixels=100_000,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        store = app.state.store
        a = {"Authorization": f"Bearer {store.create_token('alpha')}"}
        b = {"Authorization": f"Bearer {store.create_token('beta')}"}
        yield client, a, b, settings


def _post(client, headers, name: str, body: bytes):
    return client.post("/v1/datasets", files={"file": (name, body)}, headers=headers)


def _refused(r, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail, detail
    assert "\n" not in detail
    assert "/tmp" not in detail
    assert "Traceback" not in detail


def _left(settings) -> list[str]:
    """Files left under the data sets folder (a refused upload leaves none)."""
    root = settings.data_dir / "datasets"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("kind", ["tar.gz", "tar", "zip"])
def test_upload_each_archive_kind_and_list_it(api, tmp_path, kind):
    client, a, b, settings = api
    tree = write_tree(tmp_path / "tree", "split", classes=3)
    r = _post(client, a, f"digits.{kind}", archive(tree, kind, prefix="mydata/"))  # one wrapping folder
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["classes"] == ["digit0", "digit1", "digit2"]
    assert (d["num_classes"], d["in_channels"], d["layout"]) == (3, 1, "split")
    assert d["images"] == {"train": 24, "val": 12}
    assert d["filename"] == f"digits.{kind}"
    assert [x["id"] for x in client.get("/v1/datasets", headers=a).json()] == [d["id"]]
    assert client.get(f"/v1/datasets/{d['id']}", headers=a).json()["sha256"] == d["sha256"]
    # stored per team: the other team sees nothing and gets 404 on the id
    assert client.get("/v1/datasets", headers=b).json() == []
    r = client.get(f"/v1/datasets/{d['id']}", headers=b)
    assert r.status_code == 404
    assert "not found" in r.json()["detail"]
    # the stored tree is the image folder itself, readable by the reader
    stored = next((settings.data_dir / "datasets").glob("*/*/train"))
    assert load_dataset("imagefolder", path=stored.parent, input_size=16).num_classes == 3


def test_flat_archive_and_hidden_files_are_fine(api, tmp_path):
    client, a, _, _ = api
    tree = write_tree(tmp_path / "flat", "flat", classes=2)
    (tree / "digit0" / ".DS_Store").write_bytes(b"\0junk")
    (tree / "__MACOSX").mkdir()
    (tree / "__MACOSX" / "._000.png").write_bytes(b"junk")
    (tree / "README.txt").write_text("not an image")
    r = _post(client, a, "flat.zip", archive(tree, "zip"))
    assert r.status_code == 201, r.text
    assert r.json()["layout"] == "flat"
    assert r.json()["images"] == {"train": 2 * PER_CLASS}


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "PNG")
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "members, words",
    [
        ([(_member("../evil.png"), b"x")], "'..' in its path"),
        ([(_member("a/../../evil.png"), b"x")], "'..' in its path"),
        ([(_member("/etc/evil.png"), b"x")], "absolute path"),
        ([(_member("a\\..\\evil.png"), b"x")], "backslash"),
        ([(_member("a/link.png", tarfile.SYMTYPE, "/etc/passwd"), None)], "a link"),
        ([(_member("a/0.png"), b"x"), (_member("a/hard.png", tarfile.LNKTYPE, "a/0.png"), None)], "a link"),
        ([(_member("a/fifo", tarfile.FIFOTYPE), None)], "not a regular file"),
        ([(_member("a/dev", tarfile.CHRTYPE), None)], "not a regular file"),
    ],
)
def test_unsafe_tar_members_refuse_the_archive(api, tmp_path, members, words):
    client, a, _, settings = api
    r = _post(client, a, "evil.tar.gz", _tar(members))
    _refused(r, 422, words)
    assert _left(settings) == []
    assert not (tmp_path / "evil.png").exists()
    assert not (settings.data_dir / "evil.png").exists()


def test_unsafe_zip_members_refuse_the_archive(api):
    client, a, _, settings = api
    for name, words in (("../evil.png", "'..' in its path"), ("/abs.png", "absolute path")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, _png())
        _refused(_post(client, a, "evil.zip", buf.getvalue()), 422, words)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (0o120777) << 16  # a symlink
        z.writestr(link, "/etc/passwd")
    _refused(_post(client, a, "link.zip", buf.getvalue()), 422, "a link")
    assert _left(settings) == []


def test_malformed_archives_and_wrong_suffixes_are_422(api, tmp_path):
    client, a, _, settings = api
    good = archive(write_tree(tmp_path / "t", "split", classes=2), "zip")
    _refused(_post(client, a, "cut.zip", good[: len(good) // 2]), 422, "malformed .zip archive")
    _refused(_post(client, a, "noise.tar.gz", os.urandom(4096)), 422, "malformed .tar.gz archive")
    _refused(_post(client, a, "noise.tar", b"\x01" * 1024), 422, "malformed .tar archive")
    gz = archive(write_tree(tmp_path / "u", "split", classes=2), "tar.gz")
    _refused(_post(client, a, "cut.tar.gz", gz[: len(gz) // 2]), 422, "malformed .tar.gz archive")
    _refused(_post(client, a, "data.rar", good), 422, "must be a .tar, .tar.gz, .tgz, .zip archive")
    _refused(_post(client, a, "empty.zip", b""), 422, "is empty")
    dup = io.BytesIO()
    with zipfile.ZipFile(dup, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it is asked to write
        z.writestr("a/0.png", _png())
        z.writestr("a/0.png", _png())
    _refused(_post(client, a, "dup.zip", dup.getvalue()), 422, "holds '0.png' twice")
    assert _left(settings) == []


def test_too_big_archives_are_413_and_a_zip_bomb_stops_at_the_limit(api, tmp_path):
    client, a, _, settings = api
    # the upload itself over the limit
    _refused(_post(client, a, "big.tar", os.urandom(2_100_000)), 413, "2,000,000 byte limit")
    # a zip bomb: 20 MB of zeros compress to ~20 kB; unpacking stops at the 1 MB limit
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/zeros.png", b"\0" * 20_000_000)
    assert len(bomb.getvalue()) < 100_000
    _refused(_post(client, a, "bomb.zip", bomb.getvalue()), 413, "more than 1,000,000 bytes")
    # the same in a gzipped tar (headers claim the true size; the stream is counted as read)
    _refused(_post(client, a, "bomb.tar.gz", _tar([(_member("a/zeros.png"), b"\0" * 5_000_000)])), 413, "bytes")
    # too many files
    many = _tar([(_member(f"a/{i}.png"), _png()) for i in range(201)])
    _refused(_post(client, a, "many.tar.gz", many), 413, "more than 200 files")
    # one image over the pixel limit
    big = io.BytesIO()
    Image.new("L", (400, 400)).save(big, "PNG")
    members = [(_member(f"{c}/{i}.png"), _png()) for c in "ab" for i in range(4)]
    _refused(
        _post(client, a, "huge.tar.gz", _tar([*members, (_member("a/big.png"), big.getvalue())])),
        413,
        "a/big.png is 400 x 400",
    )
    assert _left(settings) == []


def test_no_images_or_images_that_do_not_decode_are_422(api, tmp_path):
    client, a, _, settings = api
    texts = _tar([(_member(f"{c}/{i}.txt"), b"hello") for c in "ab" for i in range(3)])
    _refused(_post(client, a, "texts.tar.gz", texts), 422, "no images")
    broken = [(_member(f"{c}/{i}.png"), _png()) for c in "ab" for i in range(3)]
    broken.append((_member("b/bad.png"), b"\x89PNG\r\n\x1a\n" + b"garbage" * 20))
    _refused(_post(client, a, "broken.tar.gz", _tar(broken)), 422, "image b/bad.png does not decode")
    truncated = _png()[:40]
    _refused(_post(client, a, "trunc.tar.gz", _tar([*broken[:-1], (_member("a/t.png"), truncated)])), 422, "a/t.png")
    assert _left(settings) == []
    one = _tar([(_member(f"only/{i}.png"), _png()) for i in range(3)])
    kept = _post(client, a, "one.tar.gz", one)  # no class folders: kept as unlabelled images (distillation)
    assert kept.status_code == 201, kept.text
    assert (kept.json()["num_classes"], kept.json()["images"]) == (0, {"train": 3})


# --- jobs on an uploaded data set ---


def _job(data: dict, model: dict | None = None) -> dict:
    return {
        "model": model or {"zoo": "convnet"},
        "data": data,
        "target": {"flops": 0.5},
        "strategy": {"name": "uniform"},
    }


def test_a_job_references_an_upload_and_mismatches_are_refused_at_submit(api, tmp_path):
    client, a, b, settings = api
    gray = _post(client, a, "gray.tar.gz", archive(write_tree(tmp_path / "g", "split", classes=3))).json()
    rgb = _post(client, a, "rgb.tar.gz", archive(write_tree(tmp_path / "c", "flat", classes=3, rgb=True))).json()
    r = client.post("/v1/jobs", json=_job({"upload": gray["id"], "input_size": 16}), headers=a)
    assert r.status_code == 201, r.text
    job = client.get(f"/v1/jobs/{r.json()['id']}", headers=a).json()
    assert job["spec"]["data"]["upload"] == gray["id"]
    from service.store.tables import Job

    store = client.app.state.store
    with store.read() as s:
        config = s.get(Job, job["id"]).config
    assert config["data"]["name"] == "imagefolder"
    assert config["data"]["upload"] is None
    assert config["data"]["path"].startswith(str(settings.data_dir / "datasets"))
    # another team's data set id is not found, nothing is queued
    r = client.post("/v1/jobs", json=_job({"upload": gray["id"]}), headers=b)
    _refused(r, 422, f"data.upload: data set {gray['id']} not found")
    # classes that do not match the model's outputs
    r = client.post(
        "/v1/jobs", json=_job({"upload": gray["id"]}, {"zoo": "convnet", "args": {"num_classes": 10}}), headers=a
    )
    _refused(r, 422, "the data set has 3 classes, the model outputs 10 (model.args.num_classes)")
    # channels that do not match the model's input
    r = client.post(
        "/v1/jobs", json=_job({"upload": rgb["id"]}, {"zoo": "convnet", "args": {"in_channels": 1}}), headers=a
    )
    _refused(r, 422, "the images have 3 channels, the model takes 1 (model.args.in_channels)")
    # an uploaded model's arguments count too (digits convnet: 10 classes, 1 channel)
    from safetensors.torch import save as st_save

    from pruning.models import build_model

    net = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    weights = st_save({k: v.contiguous() for k, v in net.state_dict().items()})
    model = client.post(
        "/v1/models",
        data={"zoo": "convnet", "args": json.dumps({"num_classes": 10, "in_channels": 1, "input_size": 16})},
        files={"file": ("m.safetensors", weights)},
        headers=a,
    ).json()
    r = client.post("/v1/jobs", json=_job({"upload": gray["id"]}, {"upload": model["id"]}), headers=a)
    _refused(r, 422, "the data set has 3 classes, the model outputs 10")
    # upload with a name or path is refused
    r = client.post("/v1/jobs", json=_job({"upload": gray["id"], "name": "digits"}), headers=a)
    _refused(r, 422, "not both")


@pytest.mark.slow
def test_end_to_end_job_on_an_uploaded_digits_archive(tmp_path):
    """Through the real server: `secateurs datasets upload` a digits archive (train/ + val/),
    submit a job on it over REST, and fetch outputs that carry the data's facts."""
    from service.client import Client
    from service.devserver import ServerProcess

    tree = write_tree(tmp_path / "digits", "split", classes=10, per_class=30)
    path = tmp_path / "digits.tar.gz"
    path.write_bytes(archive(tree, "tar.gz"))
    srv = ServerProcess(tmp_path / "data", SECATEURS_DATA_WORKERS="1").start()
    try:
        token = srv.cli("token", "create", "--team", "data-team").stdout.strip().splitlines()[-1]
        up = srv.cli("datasets", "upload", str(path), "--token", token)
        assert up.returncode == 0, up.stderr
        assert "10 classes, 1 channel(s)" in up.stderr
        dataset_id = int(up.stdout.strip().splitlines()[-1])
        listed = srv.cli("datasets", "list", "--json", "--token", token)
        assert [d["id"] for d in json.loads(listed.stdout.strip().splitlines()[-1])] == [dataset_id]
        bad = srv.cli("datasets", "upload", str(tmp_path / "missing.zip"), "--token", token)
        assert bad.returncode == 2
        assert "does not exist" in bad.stderr
        client = Client(srv.url, token)
        job = client.submit(
            {
                "model": {"zoo": "convnet"},
                "data": {"upload": dataset_id, "input_size": 16},
                "target": {"flops": 0.6},
                "strategy": {"name": "uniform"},
                "train": {"epochs": 3},
                "finetune": {"max_steps": 20},
                "search": {"max_candidates": 2},
            }
        )
        done = client.wait(job["id"], poll=0.5, timeout=400)
        assert done["status"] == "succeeded", done.get("error")
        files = client.download(job["id"], tmp_path / "out")
        assert {p.name for p in files} >= {"data.json", "report.json", "model.safetensors", "model.onnx"}
        facts = json.loads((tmp_path / "out" / "data.json").read_text())
        assert facts["classes"] == [f"digit{c}" for c in range(10)]
        assert facts["sizes"] == {"train": 200, "val": 100, "test": 100}
        assert facts["in_channels"] == 1
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["dataset"]["normalization"] == facts["normalization"]
        assert report["flops_after"] <= 0.6 * report["flops_before"]
        # learnt something from the uploaded images: chance is 0.1, and on 100 test images 0.2 lies
        # more than three standard deviations above it (12 training steps give about 0.3)
        assert report["accuracy_before"] > 0.2
    finally:
        srv.stop()
