"""The search core: targets, the space's bounds and resource accounting, evaluators (adaptive
BN), the runner's record/Pareto front/resume, and the registry."""

from __future__ import annotations

import pytest
import torch

from pruning import build_model, prune
from pruning.data import calibration_batches
from pruning.measure import count_flops, count_params, peak_memory_bytes
from pruning.train import TrainConfig, train
from search.base import Proposal, Result, SearchError
from search.evaluators import EvalContext, make_evaluator
from search.latency import LatencyTable
from search.registry import list_strategies, make_strategy
from search.runner import pareto_front, run_search
from search.space import SearchSpace
from search.target import Target

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def trained(digits):
    """resnet20 trained for 2 epochs on digits at 16 px (seeded: the same network whatever ran before)."""
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=16)
    train(model, digits.train, TrainConfig(epochs=2, lr=0.05, seed=0), device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def calib(digits):
    return calibration_batches(digits.train, 4, 64, seed=0)


def test_target_parse_ratios_and_absolutes() -> None:
    assert Target.parse("flops=0.5") == Target("flops", 0.5, False)
    assert Target.parse("flops=50%") == Target("flops", 0.5, False)
    assert Target.parse("params=120000") == Target("params", 120000.0, True)
    assert Target.parse("params=120k") == Target("params", 120000.0, True)
    assert Target.parse("latency=3ms") == Target("latency", 3.0, True)
    assert Target.parse("latency=0.6") == Target("latency", 0.6, False)
    assert Target.parse("memory=2MB").value == 2 * 1024**2
    assert Target.from_value({"flops": 0.3}) == Target("flops", 0.3)
    assert Target.parse("params=100").budget(1e6) == 100
    assert Target.parse("flops=0.25").budget(1000) == 250
    for bad in ["flops", "speed=0.5", "flops=-1", "flops=abc", "flops=150%", "flops=0"]:
        with pytest.raises(SearchError):
            Target.parse(bad)


def test_space_bounds_stem_pins_and_counts() -> None:
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=16)
    space = SearchSpace(model, SHAPE, "flops=0.5", pinned={"layer3.0.conv1": 0.25}, min_channels=4)
    stem = next(g.key for g in space.groups if g.is_stem)
    assert stem not in space.keys
    assert "layer3.0.conv1" not in space.keys
    kept = space.kept(dict.fromkeys(space.keys, 0.99))
    for g in space.groups:
        if g.key == stem:
            assert kept[g.key] == g.channels
        elif g.key == "layer3.0.conv1":
            assert kept[g.key] == 48
        else:
            assert kept[g.key] >= max(4, round(g.channels * 0.1))
    policy = dict.fromkeys(space.keys, 0.4)
    cut = prune(model, space.kept(policy), "l1", input_shape=SHAPE)
    res = space.resources(policy)
    assert res["flops"] == count_flops(cut, SHAPE)
    assert res["params"] == count_params(cut)
    assert res["memory_bytes"] == peak_memory_bytes(cut, SHAPE)
    assert space.feasible(space.smallest_policy())
    assert space.original["flops"] == count_flops(model, SHAPE)
    assert space.budget == pytest.approx(0.5 * count_flops(model, SHAPE))


def test_infeasible_target_fails_at_construction() -> None:
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    with pytest.raises(SearchError, match="infeasible"):
        SearchSpace(model, SHAPE, "flops=0.01")
    with pytest.raises(SearchError, match="infeasible"):
        SearchSpace(model, SHAPE, "params=1000")
    with pytest.raises(SearchError, match="do not exist"):
        SearchSpace(model, SHAPE, "flops=0.5", pinned=["nope"])


def test_adaptive_bn_changes_running_stats_and_improves_score(trained, digits, calib) -> None:
    space = SearchSpace(trained, SHAPE, "flops=0.4", calibration=calib)
    ctx = EvalContext(trained, digits, SHAPE, calibration=calib, space=space)
    policy = dict.fromkeys(space.keys, 0.3)
    plain, adaptive = make_evaluator("plain", ctx), make_evaluator("adaptive-bn", ctx)
    cut_plain = plain.cut(policy)
    cut_adapt = adaptive.cut(policy)
    before = cut_adapt.bn1.running_mean.clone()
    torch.testing.assert_close(before, cut_plain.bn1.running_mean)
    s_plain = plain.score(cut_plain, policy, "t")
    s_adapt = adaptive.score(cut_adapt, policy, "t")
    assert not torch.allclose(before, cut_adapt.bn1.running_mean)
    assert s_adapt > s_plain, (s_adapt, s_plain)
    # the context's full model is untouched by evaluation
    assert trained.bn1.running_mean.shape[0] == 16


def test_runner_records_pareto_and_resumes_without_reevaluating(trained, digits, calib) -> None:
    space = SearchSpace(trained, SHAPE, "flops=0.5", calibration=calib)
    ctx = EvalContext(trained, digits, SHAPE, calibration=calib, space=space, val_batches=1)
    ev = make_evaluator("adaptive-bn", ctx)
    calls: list[int] = []

    def executor(props: list[Proposal]) -> list[Result]:
        calls.extend(p.id for p in props)
        return [ev.evaluate(p.policy, p.phase, p.id, p.meta) for p in props]

    opts = {"n_samples": 5, "top_k": 0}
    full = run_search(make_strategy("eagleeye", space, seed=3, **opts), ev, executor=executor)
    assert len(full.results) == 5
    assert full.best.score == max(r.score for r in full.results)
    assert all(r.flops <= space.budget for r in full.results)
    assert full.pareto == pareto_front(full.results, "flops")
    for a in full.pareto:
        assert not any(b.flops <= a.flops and b.score > a.score for b in full.results)
    # stop after 2 candidates, keep the checkpoint, then resume on a fresh strategy
    calls.clear()
    saved: list[dict] = []
    first = run_search(
        make_strategy("eagleeye", space, seed=3, **opts),
        ev,
        executor=executor,
        should_stop=lambda: len(calls) >= 2,
        checkpoint=saved.append,
    )
    assert first.stopped
    assert len(first.results) == 2
    resumed = make_strategy("eagleeye", space, seed=3, **opts)
    resumed.load_state_dict(saved[-1], first.results)
    calls.clear()
    second = run_search(resumed, ev, executor=executor, previous=first.results)
    assert calls == [2, 3, 4]
    assert [r.policy for r in second.results] == [r.policy for r in full.results]
    assert second.best.policy == full.best.policy


def test_registry_lists_every_strategy_and_fails_only_when_asked() -> None:
    names = list_strategies()
    for n in ["uniform", "sensitivity", "global", "eagleeye", "netadapt", "optuna", "amc", "metapruning", "autoslim"]:
        assert n in names
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
    space = SearchSpace(model, SHAPE, "flops=0.5")
    with pytest.raises(SearchError, match="unknown strategy"):
        make_strategy("nope", space)
    with pytest.raises(SearchError, match=r"strategy 'uniform' takes no option\(s\) bogus"):
        make_strategy("uniform", space, bogus=1)


def test_a_latency_table_is_a_line_through_the_whole_network_and_its_half_cut(tmp_path, monkeypatch) -> None:
    """Layers timed alone can cost more than inside the network (per-call costs that grow with
    the channels, as INT8 blocks' quantize/dequantize do): here a block costs twice its share of
    the whole network. An offset-only table predicts cuts far too fast; the fitted line predicts
    a cut it was not fitted on. Deterministic stand-ins for the timings (ms from MACs)."""
    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("search.latency.measure_latency", lambda model, shape, **_: count_flops(model, shape) * 2e-6)

    def whole(m: torch.nn.Module) -> float:
        return count_flops(m, SHAPE) * 1e-6 + 0.5

    monkeypatch.setattr(
        "search.latency._whole_network_ms", lambda models, shape, repeats, runtime: [whole(m) for m in models]
    )
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    space = SearchSpace(model, SHAPE, "latency=0.9")
    table = space.latency_table
    assert table is not None
    assert table.scale == pytest.approx(0.5, rel=0.05)
    assert table.calibration["measured_ms"][0] == pytest.approx(space.original["latency_ms"])
    policy = dict.fromkeys(space.keys, 0.25)  # a cut the line was not fitted on
    truth = whole(space.cut(policy))
    assert space.resource(policy) == pytest.approx(truth, rel=0.03)
    offset_only = LatencyTable(
        table.layers, space.original["latency_ms"] - table.calibration["layer_sums_ms"][0], table.device
    )
    assert offset_only.predict(space.graph, space.kept(policy)) < 0.85 * truth  # what the line corrects


def test_a_latency_table_without_a_uniform_cut_keeps_the_offset_alone(tmp_path, monkeypatch) -> None:
    """A model the engine cannot cut uniformly still gets a table: scale 1, the reason kept."""
    from pruning.errors import PruningError

    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("search.latency.measure_latency", lambda model, shape, **_: count_flops(model, shape) * 2e-6)
    monkeypatch.setattr(
        "search.latency._whole_network_ms",
        lambda models, shape, repeats, runtime: [count_flops(m, shape) * 1e-6 + 0.5 for m in models],
    )

    def refuse(*args, **kwargs):
        raise PruningError("cannot cut this one")

    monkeypatch.setattr("search.latency.prune", refuse)
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    table = LatencyTable.for_model(model, SHAPE, grid=2, use_cache=False, repeats=1)
    assert table.scale == 1.0
    assert "cannot cut this one" in table.calibration["why"]
    space = SearchSpace(model, SHAPE, "latency=0.9", latency_table=table)
    assert space.original["latency_ms"] == pytest.approx(count_flops(model, SHAPE) * 1e-6 + 0.5)


def test_latency_target_uses_a_cached_lookup_table(tmp_path, monkeypatch, digits) -> None:
    """The table is measured once, cached, read back and used for predictions. Timings are a
    deterministic stand-in (ms proportional to MACs), so a loaded machine cannot flip the
    order of the predictions; real timings are bench/latency.py's job."""
    monkeypatch.setenv("SECATEURS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(
        "search.latency.measure_latency", lambda model, shape, **_: count_flops(model, shape) * 1e-6 + 0.01
    )
    monkeypatch.setattr(
        "search.latency._whole_network_ms",
        lambda models, shape, repeats, runtime: [count_flops(m, shape) * 1e-6 + 0.01 for m in models],
    )
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    space = SearchSpace(model, SHAPE, "latency=0.95")
    tables = list((tmp_path / "latency").glob("*.json"))
    assert len(tables) == 1
    assert space.original["latency_ms"] > 0
    small, big = space.resources(dict.fromkeys(space.keys, 0.8)), space.resources(dict.fromkeys(space.keys, 0.1))
    assert small["latency_ms"] < big["latency_ms"] < space.original["latency_ms"]
    stamp = tables[0].stat().st_mtime_ns
    again = SearchSpace(model, SHAPE, "latency=0.95")  # same device and architecture: read from disk
    assert tables[0].stat().st_mtime_ns == stamp
    assert again.original["latency_ms"] == space.original["latency_ms"]
    best = run_search(
        make_strategy("uniform", again),
        make_evaluator("plain", EvalContext(model, digits, SHAPE, space=again, val_batches=1)),
    ).best
    assert best.latency_ms <= again.budget
