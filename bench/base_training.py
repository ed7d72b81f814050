"""Base training on a small uploaded data set (run by hand; not part of the test suite).

A new user's case: 2,000 Fashion-MNIST training images (200 a class) and 1,000 test images
(100 a class) as an image folder, `train/<class>/` + `test/<class>/` (the job splits 15% of
train off for validation), resnet20 at the images' own 28 px, no weights: the service trains
the base network itself. Rows, each trained from the same seeded initialisation:

- `old`: the job's former default, 2 epochs of `pruning.train.train` (cosine, last weights);
- `default`: today's default, `pruning.train.fit` with `TrainConfig()` (until validation
  accuracy stops improving, at most `max_epochs`, best epoch kept).

Test accuracy of the trained base per seed; the JSON records every call that wrote rows.

    SECATEURS_DATA_WORKERS=0 python -m bench.base_training --seeds 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pruning.data import FASHION_MNIST_DIR, data_workers, dataset_size, fashion_mnist_arrays, load_dataset
from pruning.models import build_model
from pruning.train import TrainConfig, evaluate, fit, make_reproducible, steps_per_epoch, train

OLD_EPOCHS = 2.0  # the job config's former default


def write_folder(root: Path, source: Path, per_class_train: int, per_class_test: int, seed: int) -> Path:
    """`root/train/<class>/*.png` and `root/test/<class>/*.png`, a seeded pick of Fashion-MNIST."""
    rng = np.random.default_rng(seed)
    for split, stem, per_class in (("train", "train", per_class_train), ("test", "t10k", per_class_test)):
        images, labels = fashion_mnist_arrays(stem, source)  # the loader's own IDX reader
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False):
                Image.fromarray(images[i]).save(folder / f"{i}.png")
    return root


def run_row(mode: str, data: Any, seed: int, threads: int) -> dict[str, Any]:
    """Train resnet20 from the seed's initialisation in one mode; its test accuracy and length."""
    make_reproducible(seed, threads)
    args = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}
    model = build_model("resnet20", **args)
    per_epoch = steps_per_epoch(dataset_size(data.train), TrainConfig().batch_size)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"mode": mode, "seed": seed}
    if mode == "old":
        train(model, data.train, TrainConfig(epochs=OLD_EPOCHS, seed=seed), device="cpu")
        row.update(epochs_run=OLD_EPOCHS, steps=round(OLD_EPOCHS * per_epoch), val=evaluate(model, data.val))
    else:
        out = fit(model, data, TrainConfig(seed=seed), device="cpu")
        row.update(
            epochs_run=out.steps / per_epoch,
            steps=out.steps,
            best_epoch=out.best_step / per_epoch,
            stopped_early=out.stopped_early,
            val=out.best_val,
        )
    row.update(test=evaluate(model, data.test), seconds=time.perf_counter() - t0)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["old", "default"], choices=["old", "default"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--folder", default="runs/base-training/fashion-mnist-2000", help="where the images are written")
    ap.add_argument("--out", default="bench/results/base-training-fashion-mnist-2000.json")
    args = ap.parse_args(argv)

    folder = Path(args.folder)
    if not (folder / "train").exists():
        write_folder(folder, Path(FASHION_MNIST_DIR), 200, 100, seed=0)
    data = load_dataset("imagefolder", path=folder, input_size=28, seed=0)
    sizes = {k: dataset_size(getattr(data, k)) for k in ("train", "val", "test")}
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {"rows": [], "calls": []}
    saved["setting"] = {
        "data": "Fashion-MNIST image folder, 200 train + 100 test images a class (seed 0), 28 px",
        "sizes": sizes,
        "model": "resnet20",
        "default": {k: v for k, v in vars(TrainConfig()).items() if k != "seed"},
        "old_epochs": OLD_EPOCHS,
        "torch": torch.__version__,
    }
    env = [f"SECATEURS_DATA_WORKERS={data_workers()}"]  # decoding processes change the random crops drawn
    call = [*env, "python -m bench.base_training", *(argv if argv is not None else sys.argv[1:])]
    saved["calls"].append(" ".join(call))
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for mode in args.modes:
            row = run_row(mode, data, seed, args.threads)
            saved["rows"] = [r for r in saved["rows"] if (r["mode"], r["seed"]) != (mode, seed)] + [row]
            saved["summary"] = summarize(saved["rows"])
            out.write_text(json.dumps(saved, indent=1) + "\n")  # after every row: a cut-short call keeps its rows
            print(json.dumps(row), flush=True)
    print(json.dumps(saved["summary"]))
    return 0


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: seeds, mean test accuracy and its sample standard deviation over seeds."""
    summary = {}
    for mode in ("old", "default"):
        tests = [r["test"] for r in rows if r["mode"] == mode]
        if tests:
            spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
            summary[mode] = {"seeds": len(tests), "test_mean": statistics.fmean(tests), "test_std": spread}
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
