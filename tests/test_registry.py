"""One registry mechanism for models, criteria, strategies and evaluators: each complete, in the
same order, whichever module was imported first (no import-order dependence), without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pruning.errors import PruningError
from pruning.registry import Registry

ROOT = Path(__file__).resolve().parents[1]

# Each registry: the module that defines it, and how to list it.
REGISTRIES = {
    "models": ("pruning.models.zoo", "MODELS.names()"),
    "criteria": ("pruning.criteria", "CRITERIA.names()"),
    "strategies": ("search.registry", "STRATEGIES.names()"),
    "evaluators": ("search.evaluators", "EVALUATORS.names()"),
}

EXPECTED = {
    "models": [
        "convnet",
        "deeplabv3",
        "mobilenetv2",
        "resnet18",
        "resnet20",
        "resnet56",
        "unet",
        "vgg16_bn",
        "yolo_nano",
        "yolo_small",
    ],
    "criteria": ["activation-mean", "activation-std", "apoz", "first-k", "fpgm", "hrank", "l1", "l2", "slimming"],
    "strategies": [
        "uniform",
        "sensitivity",
        "global",
        "eagleeye",
        "netadapt",
        "optuna",
        "amc",
        "metapruning",
        "autoslim",
    ],
    "evaluators": ["adaptive-bn", "finetune", "plain", "pruningnet", "reconstruct", "shared-weights"],
}

# Every module of both packages imported (Ray-free ones; `rllib_agent` loads Ray only when used).
EVERYTHING = """
import importlib, pkgutil, pruning, search
for pkg in (pruning, search):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
"""


def _listing(setup: str, registry: str) -> dict[str, object]:
    """In a fresh interpreter: run `setup`, then list `registry` from its own module."""
    module, names = REGISTRIES[registry]
    probe = (
        f"{setup}\nimport json, sys\nimport {module} as reg\n"
        f"print(json.dumps({{'names': reg.{names}, 'ray': 'ray' in sys.modules}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def full() -> dict[str, list[str]]:
    """Every registry as listed after importing every module of `pruning` and `search`."""
    probe = (
        f"{EVERYTHING}\nimport json\n"
        + "\n".join(f"from {m} import {n.split('.')[0]}" for m, n in REGISTRIES.values())
        + "\nprint(json.dumps({"
        + ", ".join(f"{k!r}: {n}" for k, (_, n) in REGISTRIES.items())
        + "}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_full_packages_list_every_built_in(full: dict[str, list[str]]) -> None:
    assert full == EXPECTED


@pytest.mark.parametrize("registry", list(REGISTRIES))
def test_each_registry_alone_lists_what_the_full_packages_do(registry: str, full: dict[str, list[str]]) -> None:
    """A fresh interpreter that imports only the registry's own module lists every entry, in the
    order the fully imported packages give, without importing Ray."""
    got = _listing("", registry)
    assert got == {"names": full[registry], "ray": False}


@pytest.mark.parametrize(
    "first",
    ["search.strategies.autoslim", "search.strategies.amc.evaluator", "search.strategies.optuna_search"],
)
def test_a_strategy_module_imported_first_changes_no_order(first: str, full: dict[str, list[str]]) -> None:
    """Registration runs in whatever order modules are imported; the listing does not follow it."""
    assert _listing(f"import {first}", "strategies")["names"] == full["strategies"]
    assert _listing(f"import {first}", "evaluators")["names"] == full["evaluators"]


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


def test_a_registry_imports_its_modules_on_first_lookup_and_ranks_entries_by_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "regprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from pruning.registry import Registry\nREG = Registry('widget', modules=('regprobe.a', 'regprobe.b'))\n"
    )
    (pkg / "a.py").write_text(
        "from regprobe import REG\n@REG.register('a2')\ndef a2(): ...\n@REG.register('a1')\ndef a1(): ...\n"
    )
    (pkg / "b.py").write_text("from regprobe import REG\nREG.register('b1', lambda: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import regprobe.b  # type: ignore[import-not-found]  # the second module first

        reg = regprobe.REG
        reg.register("outside", len)  # defined in no module the registry names: ranked after them
        assert "regprobe.a" not in sys.modules
        assert reg.names() == ["a2", "a1", "b1", "outside"]  # module order, then registration order
        assert "regprobe.a" in sys.modules
    finally:
        for name in ("regprobe", "regprobe.a", "regprobe.b"):
            sys.modules.pop(name, None)


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
    assert (
        str(exc.value)
        == "unknown model 'nope'; choose one of: convnet, deeplabv3, mobilenetv2, resnet18, resnet20, resnet56, unet, "
        "vgg16_bn, yolo_nano, yolo_small"
    )
    with pytest.raises(PruningError, match=r"^unknown criterion 'nope'; choose one of: activation-mean, .*first-k"):
        get_criterion("nope")
    with pytest.raises(SearchError, match=r"^unknown strategy 'nope'; choose one of: uniform, sensitivity, global, "):
        strategy_class("nope")
    with pytest.raises(SearchError, match=r"^unknown evaluator 'nope'; choose one of: adaptive-bn, finetune, plain, "):
        evaluator_class("nope")
    from search.registry import register_strategy

    with pytest.raises(SearchError, match="is already registered"):
        register_strategy("uniform")(strategy_class("uniform"))
