"""Unstructured masks: magnitude (per layer, global), real sparsity, masks held through training,
Han et al.'s rounds, and the Lottery Ticket's rewinding and reinit control."""

from __future__ import annotations

import copy

import pytest
import torch

from pruning import build_model
from pruning.errors import PruningError
from pruning.train import TrainConfig, train
from pruning.unstructured import (
    MaskKeeper,
    apply_masks,
    han_prune,
    lottery_ticket,
    magnitude_masks,
    magnitude_prune,
    prunable_weights,
    round_amounts,
    sparsity,
)

FAST = TrainConfig(epochs=1, max_steps=4, batch_size=32, lr=0.05)

pytestmark = pytest.mark.usefixtures("one_thread")


def _convnet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("convnet", in_channels=1, input_size=16)


def test_layer_masks_cut_the_smallest_weights_of_each_layer() -> None:
    model = _convnet()
    masks = magnitude_masks(model, 0.6, "layer")
    weights = prunable_weights(model)
    for k, w in weights.items():
        m = masks[k].bool()
        assert (~m).sum() == round(w.numel() * 0.6)
        assert w.detach().abs()[~m].max() <= w.detach().abs()[m].min()
    apply_masks(model, masks)
    report = sparsity(model)
    assert report["overall"] == pytest.approx(0.6, abs=1e-3)
    for k in weights:
        assert report["layers"][k] == pytest.approx(0.6, abs=0.02)


def test_global_masks_use_one_threshold() -> None:
    model = _convnet()
    with torch.no_grad():
        model.features[3].weight.mul_(100.0)  # a layer of large weights loses few under one threshold
    masks = magnitude_masks(model, 0.5, "global")
    weights = prunable_weights(model)
    kept = torch.cat([w.detach().abs()[masks[k].bool()] for k, w in weights.items()])
    cut = torch.cat([w.detach().abs()[~masks[k].bool()] for k, w in weights.items()])
    assert float(cut.max()) <= float(kept.min())  # one threshold over every layer
    apply_masks(model, masks)
    report = sparsity(model)
    assert report["overall"] == pytest.approx(0.5, abs=1e-4)
    assert report["layers"]["features.3.weight"] < 0.05
    assert report["layers"]["fc1.weight"] > 0.5


def test_iterative_masks_remove_a_fraction_of_the_survivors() -> None:
    model = _convnet()
    first = magnitude_prune(model, 0.5, "layer")
    second = magnitude_masks(model, 0.5, "layer", first)
    for k in first:
        assert bool((second[k] <= first[k]).all())  # pruned weights stay pruned
    apply_masks(model, second)
    assert sparsity(model)["overall"] == pytest.approx(0.75, abs=1e-3)
    amounts = round_amounts(0.8, 3)
    survive = 1.0
    for a in amounts:
        survive *= 1 - a
    assert survive == pytest.approx(0.2)
    with pytest.raises(PruningError):
        magnitude_masks(model, 1.0)


def test_masks_survive_training_steps(digits) -> None:
    model = _convnet()
    masks = magnitude_prune(model, 0.7, "layer")
    free = copy.deepcopy(model)
    train(model, digits.train, FAST, after_step=MaskKeeper(masks), device="cpu")
    for k, w in prunable_weights(model).items():
        assert bool((w.detach()[masks[k] == 0] == 0).all())
    assert sparsity(model)["overall"] == pytest.approx(0.7, abs=1e-3)
    train(free, digits.train, FAST, device="cpu")  # without the keeper, momentum revives them
    assert sparsity(free)["overall"] < 0.1


def test_lottery_ticket_rewinds_survivors_to_their_initial_values(digits) -> None:
    model = _convnet()
    init = copy.deepcopy(model.state_dict())
    reinit = _convnet(seed=1)
    res = lottery_ticket(
        model, digits.train, 0.8, rounds=2, train_config=FAST, reinit_model=reinit, eval_data=digits.test
    )
    ticket = res.extra["ticket_state"]
    for k, m in res.masks.items():
        alive = m.bool()
        torch.testing.assert_close(ticket[k][alive], init[k][alive])  # survivors: exactly the init values
        assert bool((ticket[k][~alive] == 0).all())
        assert not torch.equal(model.state_dict()[k][alive], init[k][alive])  # and the ticket was then trained
    assert sparsity(model)["overall"] == pytest.approx(0.8, abs=1e-3)
    assert sparsity(res.extra["reinit_model"])["overall"] == pytest.approx(0.8, abs=1e-3)
    assert [r.round for r in res.history] == [0, 1, 2]
    assert res.history[0].sparsity == 0.0
    assert res.history[-1].sparsity == pytest.approx(0.8, abs=1e-3)
    assert 0.0 <= res.extra["reinit_accuracy"] <= 1.0


def test_lottery_ticket_late_rewinding_uses_the_early_iterate(digits) -> None:
    k_step = 2
    model = _convnet()
    reference = _convnet()
    snaps = {}
    count = [0]

    def grab(m: torch.nn.Module) -> None:
        count[0] += 1
        if count[0] == k_step:
            snaps["state"] = copy.deepcopy(m.state_dict())

    train(reference, digits.train, FAST, after_step=grab, device="cpu")  # the same seeded run
    res = lottery_ticket(model, digits.train, 0.5, rounds=1, train_config=FAST, rewind_step=k_step)
    ticket = res.extra["ticket_state"]
    for k, m in res.masks.items():
        alive = m.bool()
        torch.testing.assert_close(ticket[k][alive], snaps["state"][k][alive])
    with pytest.raises(PruningError, match="rewind step"):
        lottery_ticket(_convnet(), digits.train, 0.5, rounds=1, train_config=FAST, rewind_step=100)


def test_han_rounds_reach_the_target_sparsity(digits) -> None:
    model = _convnet()
    res = han_prune(
        model, digits.train, 0.9, rounds=3, penalty="l1", strength=1e-5, train_config=FAST, retrain_config=FAST
    )
    levels = [r.sparsity for r in res.history]
    assert levels == sorted(levels)
    assert len(levels) == 3
    assert levels[-1] == pytest.approx(0.9, abs=1e-3)
    assert sparsity(model)["overall"] == pytest.approx(0.9, abs=1e-3)
