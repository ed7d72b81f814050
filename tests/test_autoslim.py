"""AutoSlim: greedy slimming of a trained universally slimmable network with shared weights,
its ask/tell state round trip, and the CLI from `slimmable train` to `search --strategy autoslim`."""

from __future__ import annotations

import io
import json

import pytest
import torch

from pruning import build_model
from pruning.data import calibration_batches
from pruning.export import load_model, load_weights
from pruning.slimmable import (
    calibrate_bn,
    evaluate_config,
    load_supernet,
    make_slimmable,
    save_supernet,
)
from search.base import SearchError
from search.evaluators import EvalContext, make_evaluator
from search.runner import run_search
from search.space import SearchSpace
from search.strategies.autoslim import AutoSlimStrategy
from secateurs import main

SHAPE = (1, 16, 16)
ARGS = {"num_classes": 10, "in_channels": 1, "input_size": 16}
WIDTHS = [0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def supernet_dir(digits, slimmable_convnet_digits, tmp_path_factory):
    """A universally slimmable convnet, trained briefly (the session's, tests/conftest.py) and saved."""
    net = slimmable_convnet_digits
    out = tmp_path_factory.mktemp("supernet")
    save_supernet(net, out, calibration=calibration_batches(digits.train, 4, 64, 0))
    return out


def _setup(digits, supernet_dir, target: str = "flops=0.5"):
    model = load_weights(build_model("convnet", **ARGS), supernet_dir / "full.safetensors").eval()
    calib = calibration_batches(digits.train, 4, 64, 0)
    space = SearchSpace(model, SHAPE, target, prune_stem=True)
    ctx = EvalContext(model=model, data=digits, input_shape=SHAPE, calibration=calib, space=space, val_batches=2)
    return space, make_evaluator("shared-weights", ctx, supernet=str(supernet_dir))


def test_greedy_keeps_the_least_harmful_step_and_meets_the_target(digits, supernet_dir) -> None:
    space, evaluator = _setup(digits, supernet_dir)
    strategy = AutoSlimStrategy(space, supernet=str(supernet_dir), step=0.1)
    outcome = run_search(strategy, evaluator)
    best = outcome.best
    assert strategy.done
    assert best is not None
    frac = space.fraction(best.policy)
    assert 0.495 <= frac <= 0.5  # meets the target, within 1 % of it
    # every candidate was scored with the shared weights: re-scoring one gives the same number
    net = load_supernet(supernet_dir)
    calib = calibration_batches(digits.train, 4, 64, 0)
    again = evaluate_config(net, digits.val, space.kept(best.policy), calib, max_batches=2)
    assert again == pytest.approx(best.score)
    # each greedy step keeps the trial with the best score and the next step starts from it
    greedy = [r for r in outcome.results if r.phase == "greedy"]
    steps = sorted({r.meta["iteration"] for r in greedy})
    assert len(steps) >= 2
    for it in steps[:-1]:
        trials = [r for r in greedy if r.meta["iteration"] == it]
        assert 1 <= len(trials) == len({r.meta["group"] for r in trials}) <= len(space.keys)
        chosen = max(trials, key=lambda r: (r.score, -r.flops))  # ties: the smaller network
        for nxt in (r for r in greedy if r.meta["iteration"] == it + 1):
            diff = [k for k in chosen.meta["kept"] if nxt.meta["kept"][k] != chosen.meta["kept"][k]]
            assert diff == [nxt.meta["group"]]
    flops = [r.flops for r in outcome.results if r.phase == "start"] + [
        max((r for r in greedy if r.meta["iteration"] == it), key=lambda r: (r.score, -r.flops)).flops for it in steps
    ]
    assert flops == sorted(flops, reverse=True)


def test_state_round_trip_resumes_exactly(digits, supernet_dir) -> None:
    space, evaluator = _setup(digits, supernet_dir, "flops=0.6")
    reference = AutoSlimStrategy(space, supernet=str(supernet_dir), step=0.2)
    ref_outcome = run_search(reference, evaluator)
    ref_ids = [(r.proposal_id, tuple(sorted(r.policy.items()))) for r in ref_outcome.results]

    first = AutoSlimStrategy(space, supernet=str(supernet_dir), step=0.2)
    seen, record = [], []
    for _ in range(3):
        for p in first.ask(2):
            seen.append((p.id, tuple(sorted(p.policy.items()))))
            record.append(evaluator.evaluate(p.policy, p.phase, p.id, dict(p.meta)))
            first.tell([record[-1]])
    crashed_with = first.ask(1)  # asked, never told: the crash loses it
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert "trajectory" not in state["extra"]
    assert "history" not in state  # results live in the record only
    # the record ran ahead of the checkpoint: the crashed proposal's result was stored, never told
    record += [evaluator.evaluate(p.policy, p.phase, p.id, dict(p.meta)) for p in crashed_with]

    resumed = AutoSlimStrategy(space, supernet=str(supernet_dir), step=0.2)
    resumed.load_state_dict(state, record)
    again = resumed.ask(1)
    assert [p.id for p in again] == [p.id for p in crashed_with]
    pending = again
    while pending:
        for p in pending:
            seen.append((p.id, tuple(sorted(p.policy.items()))))
            resumed.tell([evaluator.evaluate(p.policy, p.phase, p.id, dict(p.meta))])
        pending = resumed.ask(1)
    assert resumed.done
    assert seen == ref_ids
    assert resumed.best.policy == reference.best.policy


def test_autoslim_refuses_bad_supernets(digits, supernet_dir, tmp_path) -> None:
    space, _ = _setup(digits, supernet_dir)
    with pytest.raises(SearchError, match="supernet"):
        AutoSlimStrategy(space)
    with pytest.raises(SearchError):
        AutoSlimStrategy(space, supernet=str(tmp_path / "nothing"))
    switchable = make_slimmable(
        build_model("convnet", **ARGS), SHAPE, WIDTHS, universal=False, zoo="convnet", zoo_args=ARGS
    )
    save_supernet(switchable, tmp_path / "sw")
    with pytest.raises(SearchError, match="universal"):
        AutoSlimStrategy(space, supernet=str(tmp_path / "sw"))
    with pytest.raises(SearchError, match="step"):
        AutoSlimStrategy(space, supernet=str(supernet_dir), step=2.5)


def test_cli_train_then_search_autoslim(digits, tmp_path, capsys) -> None:
    """`slimmable train --universal` then `search --strategy autoslim`: the pipeline's final
    network, before fine-tuning, is exactly the supernet's sub-network at the found config."""
    sn = tmp_path / "sn"
    rc = main(
        [
            "slimmable",
            "train",
            "--model",
            "convnet",
            "--data",
            "digits",
            "--widths",
            "0.25,0.5,1.0",
            "--universal",
            "--epochs",
            "1",
            "--out",
            str(sn),
            "--json",
        ]
    )
    assert rc == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(trained["test_accuracy"]) == {"0.25", "0.5", "1"}
    assert (sn / "supernet.safetensors").exists()
    assert (sn / "supernet.json").exists()
    out = tmp_path / "search"
    rc = main(
        [
            "search",
            "--model",
            "convnet",
            "--data",
            "digits",
            "--strategy",
            "autoslim",
            "--option",
            f"supernet={sn}",
            "--target",
            "flops=0.5",
            "--finetune-epochs",
            "0",
            "--val-batches",
            "2",
            "--no-onnx",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["strategy"] == "autoslim"
    assert summary["evaluator"] == "shared-weights"
    assert 0.495 * summary["flops_before"] <= summary["flops_after"] <= 0.5 * summary["flops_before"]
    net = load_supernet(sn)
    calib = calibration_batches(digits.train, 4, 64, 0)
    assert summary["accuracy_pruned"] == pytest.approx(
        evaluate_config(net, digits.test, summary["kept_channels"], calib)
    )
    full_calib = calibration_batches(digits.train, 8, 64, 0)  # what `slimmable train` calibrated with
    assert summary["accuracy_before"] == pytest.approx(evaluate_config(net, digits.test, 1.0, full_calib))
    rc = main(
        ["slimmable", "export", "--supernet", str(sn), "--width", "0.5", "--out", str(tmp_path / "w05"), "--json"]
    )
    assert rc == 0
    capsys.readouterr()
    x = digits.test.tensors[0][:8]
    net.set_width(0.5)
    calibrate_bn(net, full_calib)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "w05")(x), net(x), atol=1e-5, rtol=1e-4)
    rc = main(
        [
            "search",
            "--model",
            "resnet20",
            "--data",
            "digits",
            "--strategy",
            "autoslim",
            "--option",
            f"supernet={sn}",
            "--target",
            "flops=0.5",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert rc == 2
    assert "convnet" in capsys.readouterr().err
