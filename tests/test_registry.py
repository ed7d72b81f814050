"""One registry mechanism for models, criteria, strategies and evaluators: complete after
`import pruning, search` alone (no import-order dependence), without importing Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pruning.errors import PruningError
from pruning.registry import Registry

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import pruning, search
loaded = set(sys.modules)
from pruning.models import MODELS, list_models
from pruning.criteria import CRITERIA
from search.registry import STRATEGIES, list_strategies
from search.evaluators import EVALUATORS, list_evaluators
print(json.dumps({
    "models": list_models(), "criteria": CRITERIA.names(), "strategies": list_strategies(),
    "evaluators": list_evaluators(), "ray": "ray" in sys.modules,
    "lens": [len(MODELS), len(CRITERIA), len(STRATEGIES), len(EVALUATORS)],
    "imported_later": sorted(set(sys.modules) - loaded),
}))
"""


def test_every_registry_is_complete_after_importing_the_packages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["models"] == ["convnet", "mobilenetv2", "resnet20", "resnet56", "vgg16_bn"]
    assert got["criteria"] == [
        "activation-mean",
        "activation-std",
        "apoz",
        "first-k",
        "fpgm",
        "hrank",
        "l1",
        "l2",
        "slimming",
    ]
    assert got["strategies"] == [
        "uniform",
        "sensitivity",
        "global",
        "eagleeye",
        "netadapt",
        "optuna",
        "amc",
        "metapruning",
        "autoslim",
    ]
    assert got["evaluators"] == ["adaptive-bn", "finetune", "plain", "pruningnet", "reconstruct", "shared-weights"]
    assert got["lens"] == [5, 9, 9, 6]
    assert got["ray"] is False
    assert got["imported_later"] == []  # the lists above were complete right after `import pruning, search`


def test_first_k_needs_only_the_criteria_module() -> None:
    probe = (
        "import pruning.criteria as c, sys; "
        "print(type(c.get_criterion('first-k')).__name__, 'pruning.slimmable' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["FirstK", "False"]


def test_register_as_decorator_or_call_and_look_up() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("b")
    def b() -> None: ...

    class A:
        name = "a"

    assert reg.register()(A) is A  # name from the object's `name`
    reg.register("c", len)
    assert reg.names() == ["b", "a", "c"]
    assert list(reg) == ["b", "a", "c"]
    assert len(reg) == 3
    assert reg.get("b") is b
    assert reg["a"] is A
    assert "c" in reg
    assert "z" not in reg
    assert Registry("widget", sort=True).register("y", 1) == 1


def test_a_duplicate_name_is_an_error() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("x", 1)
    with pytest.raises(PruningError, match="widget 'x' is already registered"):
        reg.register("x")(2)
    with pytest.raises(PruningError, match="is named 'a'"):
        reg.register("b")(type("A", (), {"name": "a"}))
    with pytest.raises(TypeError):
        reg.register(len)  # bare @reg.register without a name call


def test_an_unknown_name_lists_the_choices_with_each_callers_error() -> None:
    from pruning.criteria import get_criterion
    from pruning.models import build_model
    from search.base import SearchError
    from search.evaluators import evaluator_class
    from search.registry import strategy_class

    with pytest.raises(PruningError) as exc:
        build_model("nope")
    assert str(exc.value) == "unknown model 'nope'; choose one of: convnet, mobilenetv2, resnet20, resnet56, vgg16_bn"
    with pytest.raises(PruningError, match=r"^unknown criterion 'nope'; choose one of: activation-mean, .*first-k"):
        get_criterion("nope")
    with pytest.raises(SearchError, match=r"^unknown strategy 'nope'; choose one of: uniform, sensitivity, global, "):
        strategy_class("nope")
    with pytest.raises(SearchError, match=r"^unknown evaluator 'nope'; choose one of: adaptive-bn, finetune, plain, "):
        evaluator_class("nope")
    from search.registry import register_strategy

    with pytest.raises(SearchError, match="is already registered"):
        register_strategy("uniform")(strategy_class("uniform"))
