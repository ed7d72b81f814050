"""User data in: the ImageFolder reader (both layouts, streamed from disk, augmentation and a
normalisation measured once), `POST /v1/datasets` (safe extraction, per-team storage, every
refusal a 4xx with one line) and a job on an uploaded archive through REST."""

from __future__ import annotations

import gc
import io
import json
import os
import tarfile
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
