"""The same job and seed give the same numbers: a small search and fine-tune on digits run twice
in one process end bit-identical, and a trained base model is reused from the cache by its
training key (model, arguments, data, training settings, seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruning.train import TrainConfig, training_key
from workers.pipeline import run_pipeline
from workers.sink import FileSink

pytestmark = pytest.mark.usefixtures("one_thread")

JOB = {
    "model": {"zoo": "convnet"},
    "data": {"name": "digits"},
    "target": {"flops": 0.5},
    "strategy": {"name": "eagleeye", "options": {"n_samples": 4, "top_k": 2, "finetune_steps": 5}},
    "train": {"epochs": 1},
    "finetune": {"max_steps": 40, "eval_every": 10},
    "onnx": False,
    "seed": 3,
}
NUMBERS = ("accuracy_before", "accuracy_pruned", "accuracy_after", "val_accuracy_after", "search_score", "policy")


def phases(out: Path) -> list[str]:
    import json

    rows = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [r["data"]["phase"] for r in rows if r["kind"] == "phase"]


def test_two_runs_with_one_seed_are_bit_identical(tmp_path: Path) -> None:
    a = run_pipeline(JOB, tmp_path / "a", FileSink(tmp_path / "a"))
    b = run_pipeline(JOB, tmp_path / "b", FileSink(tmp_path / "b"))
    assert {k: a[k] for k in NUMBERS} == {k: b[k] for k in NUMBERS}
    for name in ("model.safetensors", "base_model.safetensors", "candidates.jsonl"):
        if name == "candidates.jsonl":  # wall times differ; everything else must not
            import json

            def strip(p: Path) -> list[dict]:
                rows = [json.loads(line) for line in p.read_text().splitlines()]
                return [{k: v for k, v in r.items() if k not in ("wall_seconds", "meta")} for r in rows]

            assert strip(tmp_path / "a" / name) == strip(tmp_path / "b" / name)
        else:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # another seed is another run (the comparison above is not vacuous)
    c = run_pipeline({**JOB, "seed": 4}, tmp_path / "c")
    assert (tmp_path / "c" / "base_model.safetensors").read_bytes() != (
        tmp_path / "a" / "base_model.safetensors"
    ).read_bytes()
    assert c["policy"] != a["policy"]


def test_the_trained_base_model_comes_from_the_cache_by_its_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    job = {**JOB, "strategy": {"name": "uniform"}, "finetune": {"max_steps": 0}}
    first = run_pipeline(job, tmp_path / "a", FileSink(tmp_path / "a"), cache_dir=cache)
    assert "train" in phases(tmp_path / "a")
    assert len(list(cache.glob("convnet-*.safetensors"))) == 1
    again = run_pipeline(job, tmp_path / "b", FileSink(tmp_path / "b"), cache_dir=cache)
    assert "train" not in phases(tmp_path / "b")  # loaded, not trained
    assert again["accuracy_before"] == first["accuracy_before"]
    # the report says how the base trained, whether trained here or taken from the cache
    trained = first["base_training"]
    assert (trained["epochs"], trained["epochs_run"], trained["stopped_early"]) == (1, 1, False)
    assert trained["steps"] == trained["steps_per_epoch"]
    assert [epoch for epoch, _ in trained["history"]] == [0, 1]
    assert trained["best_val"] == max(val for _, val in trained["history"])
    assert again["base_training"] == trained
    assert (tmp_path / "b" / "base_model.safetensors").read_bytes() == (
        tmp_path / "a" / "base_model.safetensors"
    ).read_bytes()
    # other training settings are another model: trained, and cached beside the first
    run_pipeline({**job, "train": {"epochs": 0.5}}, tmp_path / "c", FileSink(tmp_path / "c"), cache_dir=cache)
    assert "train" in phases(tmp_path / "c")
    assert len(list(cache.glob("convnet-*.safetensors"))) == 2


def test_the_training_key_names_everything_that_decides_the_weights() -> None:
    args = {"num_classes": 10, "in_channels": 1, "input_size": 16}
    data = {"name": "digits", "input_size": 16, "subset": None, "split_seed": 0}
    base = training_key("convnet", args, data, TrainConfig(epochs=1, seed=0))
    assert base == training_key("convnet", dict(args), dict(data), TrainConfig(epochs=1, seed=0))
    others = [
        training_key("resnet20", args, data, TrainConfig(epochs=1, seed=0)),
        training_key("convnet", {**args, "width": 0.5}, data, TrainConfig(epochs=1, seed=0)),
        training_key("convnet", args, {**data, "subset": 500}, TrainConfig(epochs=1, seed=0)),
        training_key("convnet", args, data, TrainConfig(epochs=2, seed=0)),
        training_key("convnet", args, data, TrainConfig(epochs=1, seed=1)),
    ]
    assert len({base, *others}) == 6
