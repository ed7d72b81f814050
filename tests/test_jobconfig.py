"""One job configuration: the CLI's flags and the REST schema are the job model's fields, with
its defaults; bad fields are refused the same way everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from secateurs import build_parser
from secateurs.jobflags import ALIASES, NOT_ON_CLI, config_from_args, leaves
from workers.config import JobConfig

REQUIRED = ["--model", "convnet", "--data", "digits", "--target", "flops=0.5", "--strategy", "uniform", "--out", "x"]
ROOT = Path(__file__).resolve().parents[1]


def _search_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["search"]


def _openapi_property(schema: dict, path: str) -> dict:
    """The OpenAPI property of a dotted job field, following $refs from the JobConfig schema."""
    comps = schema["components"]["schemas"]
    node = comps["JobConfig"]
    *parents, name = path.split(".")
    for p in parents:
        prop = node["properties"][p]
        ref = prop.get("$ref") or next(x["$ref"] for x in prop.get("allOf", prop.get("anyOf", [])) if "$ref" in x)
        node = comps[ref.rsplit("/", 1)[-1]]
    return node["properties"][name]


def test_every_field_is_a_cli_flag_and_an_openapi_property_with_the_same_default() -> None:
    from service.api.app import create_app
    from service.config import Settings

    parser = _search_parser()
    actions = {a.dest: a for a in parser._actions}
    schema = create_app(Settings(scheduler=False, database_url="sqlite://")).openapi()
    walked = leaves()
    assert len(walked) >= 35  # every leaf, nested sections included
    for leaf in walked:
        prop = _openapi_property(schema, leaf.path)
        if leaf.info.is_required():
            assert leaf.path.split(".")[0] in schema["components"]["schemas"]["JobConfig"]["required"] or leaf.path in (
                "data.name",
                "strategy.name",
            ), leaf.path
        else:
            assert prop.get("default", None) == leaf.default, leaf.path
        if leaf.path in NOT_ON_CLI:
            assert leaf.dest not in actions
            continue
        action = actions[leaf.dest]
        assert leaf.flag in action.option_strings, leaf.path
        if leaf.path in ALIASES:
            assert ALIASES[leaf.path] in action.option_strings
    # the CLI's defaults give exactly the model's defaults
    args = parser.parse_args(REQUIRED)
    from_cli = JobConfig.model_validate(config_from_args(args)).model_dump()
    from_model = JobConfig.model_validate(
        {
            "model": {"zoo": "convnet"},
            "data": {"name": "digits"},
            "target": "flops=0.5",
            "strategy": {"name": "uniform"},
        }
    ).model_dump()
    assert from_cli == from_model
    assert set(NOT_ON_CLI) == {"model.upload", "data.upload", "priority"}


def test_cli_flags_reach_the_config() -> None:
    args = _search_parser().parse_args(
        [
            *REQUIRED,
            "--finetune-max-steps",
            "7",
            "--finetune-schedule",
            "cosine",
            "--data-path",
            "/d",
            "--option",
            "n_samples=3",
            "--pin",
            "layer1=0.2",
            "--no-onnx",
            "--search-batch-size",
            "4",
            "--model-args",
            '{"width": 0.5}',
        ]
    )
    cfg = config_from_args(args)
    assert cfg["finetune"]["max_steps"] == 7
    assert cfg["finetune"]["schedule"] == "cosine"
    assert cfg["data"]["path"] == "/d"
    assert cfg["strategy"]["options"] == {"n_samples": 3}
    assert cfg["space"]["pinned"] == {"layer1": 0.2}
    assert cfg["onnx"] is False
    assert cfg["search"]["batch_size"] == 4
    assert cfg["model"]["args"] == {"width": 0.5}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"data": {"name": "cifar10"}}, "needs a path"),
        ({"data": {"name": "digits", "path": "/x"}}, "takes no path"),
        ({"model": {"zoo": "convnet", "upload": 3}}, "not both"),
        ({"finetune": {"schedule": "linear"}}, "plateau"),
        ({"strategy": {"name": "eagleeye", "options": {"nope": 1}}}, "takes no option(s) nope"),
        ({"criterion": "nope"}, "unknown criterion"),
    ],
)
def test_bad_fields_name_the_problem(body: dict, message: str) -> None:
    base = {
        "model": {"zoo": "convnet"},
        "data": {"name": "digits"},
        "target": {"flops": 0.5},
        "strategy": {"name": "uniform"},
    }
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        JobConfig.model_validate({**base, **body})


def test_the_documented_defaults_are_the_models() -> None:
    from workers.config import defaults_yaml

    text = (ROOT / "docs" / "service.md").read_text()
    block = text.split("<!-- defaults -->", 1)[1].split("<!-- /defaults -->", 1)[0]
    assert block.strip().removeprefix("```yaml").removesuffix("```").strip() == defaults_yaml()


def test_training_from_scratch_has_one_default() -> None:
    """A job's `train` section, `secateurs train` and `secateurs search --train-*` all take
    `pruning.train.TrainConfig`'s defaults: until validation stops improving (epochs None);
    the warm-up, left unset, is the task's (3 epochs for a detector, as YOLOv8 trains; none for
    a classifier), the same for a job and for `secateurs train`."""
    from pruning.train import TrainConfig
    from workers.config import TrainSpec
    from workers.pipeline import train_settings

    one = TrainConfig()
    assert one.epochs is None  # the default is early-stopped, not a fixed length
    fields = ("epochs", "max_epochs", "patience", "lr", "batch_size")
    unset = {k: getattr(one, k) for k in fields} | {"warmup_epochs": None}
    assert TrainSpec().model_dump() == unset
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"].parse_args(["--model", "convnet", "--data", "digits", "--out", "x.safetensors"])
    assert {k: getattr(train, k) for k in unset} == unset
    search = config_from_args(_search_parser().parse_args(REQUIRED))["train"]
    assert search == unset
    assert train_settings(TrainSpec(), "classification", 7) == TrainConfig(seed=7)
    assert train_settings(TrainSpec(), "detection", 7) == TrainConfig(seed=7, warmup_epochs=3.0)
    assert train_settings(TrainSpec(warmup_epochs=0), "detection", 7).warmup_epochs == 0


@pytest.mark.parametrize(
    "flag, value",
    [("--epochs", "nan"), ("--epochs", "0"), ("--max-epochs", "inf"), ("--patience", "0"), ("--lr", "-1")],
)
def test_secateurs_train_bounds_its_numbers_as_the_job_config_does(flag: str, value: str, capsys) -> None:
    from secateurs import main

    assert main(["train", "--model", "convnet", "--data", "digits", "--out", "x.safetensors", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"secateurs: error: {flag}: ")
