"""Slimmable networks: weight slicing, switchable BN, training that accumulates every width's
gradient before one step, export to a plain model, US-Nets' BN calibration, save/load."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning import build_model, channel_groups
from pruning.data import calibration_batches
from pruning.errors import PruningError
from pruning.export import load_model, save_model
from pruning.measure import count_flops
from pruning.slimmable import (
    SlimTrainConfig,
    accumulate_gradients,
    calibrate_bn,
    evaluate_config,
    load_supernet,
    make_slimmable,
    save_supernet,
    soft_cross_entropy,
    step_configs,
    train_slimmable,
)
from pruning.slimmable.layers import SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d

SHAPE = (1, 16, 16)
WIDTHS = [0.25, 0.5, 0.75, 1.0]
ARGS = {"num_classes": 10, "in_channels": 1, "input_size": 16}


def _slim(name: str, universal: bool, seed: int = 0):
    torch.manual_seed(seed)
    return make_slimmable(build_model(name, **ARGS), SHAPE, WIDTHS, universal=universal, zoo=name, zoo_args=ARGS)


def _randomise_bn(net) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.fixture(scope="module")
def universal_convnet(slimmable_convnet_digits):
    """A universally slimmable convnet trained briefly (sandwich rule, inplace distillation):
    the session's (tests/conftest.py)."""
    return slimmable_convnet_digits


@pytest.fixture(scope="module")
def switchable_convnet(digits):
    """A slimmable convnet with switchable BN, trained briefly at the four widths."""
    net = _slim("convnet", universal=False)
    train_slimmable(net, digits.train, SlimTrainConfig(epochs=3, seed=0), device="cpu")
    return net


def test_slicing_equals_a_narrow_zoo_model_holding_the_first_channels() -> None:
    """At width 0.5 the slimmable convnet computes exactly what a zoo convnet of width 0.5
    computes when it holds the first k filters / input channels / BN entries of every layer."""
    net = _slim("convnet", universal=True)
    _randomise_bn(net)
    net.eval().set_width(0.5)
    narrow = build_model("convnet", width=0.5, **ARGS).eval()
    full = net.net.state_dict()
    state = {}
    for key, value in narrow.state_dict().items():
        src = full[key]
        state[key] = src[tuple(slice(0, n) for n in value.shape)] if value.dim() else src
    narrow.load_state_dict(state)
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(net(x), narrow(x))


@pytest.mark.parametrize(
    "name,universal",
    [("convnet", False), ("convnet", True), ("resnet20", False), ("resnet20", True), ("mobilenetv2", True)],
)
def test_export_is_a_plain_model_with_the_same_output(name: str, universal: bool, tmp_path) -> None:
    """Exporting a width (or a per-group config) gives a plain zoo model, channels cut for
    real, that computes what the slimmable network computes there (depthwise convs included)."""
    net = _slim(name, universal)
    _randomise_bn(net)
    net.eval()
    x = torch.randn(3, *SHAPE)
    configs: list = [0.25] if name == "mobilenetv2" else [0.25, 0.75]
    if universal:
        configs.append(net.random_config(random.Random(3)))
    for config in configs:
        plain = net.export(config)
        kinds = {type(m) for m in plain.modules()}
        assert not kinds & {SlimConv2d, SlimLinear, SlimBatchNorm2d, SwitchableBatchNorm2d}
        assert {g.key: g.channels for g in channel_groups(plain, SHAPE)} == net.config
        with torch.no_grad():
            torch.testing.assert_close(plain(x), net(x), atol=1e-5, rtol=1e-4)
        assert count_flops(plain, SHAPE) == count_flops(net, SHAPE)
    save_model(plain, tmp_path, name, ARGS)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x), net(x), atol=1e-5, rtol=1e-4)


def test_residual_groups_stay_consistent_per_group_config() -> None:
    """Per-group widths follow the dependency graph: every member of a residual-coupled group
    runs at the group's width, and a config naming an unknown group is refused."""
    net = _slim("resnet20", universal=True)
    config = net.random_config(random.Random(0))
    net.set_config(config)
    modules = dict(net.net.named_modules())
    for key, members in net.group_members.items():
        assert {modules[m].active_out for m in members} == {config[key]}
    assert net(torch.randn(2, *SHAPE)).shape == (2, 10)
    with pytest.raises(PruningError):
        net.set_config({"no.such.layer": 3})


def test_switchable_bn_keeps_private_statistics_that_matter(switchable_convnet, digits) -> None:
    """Each width has its own running statistics, they differ from the full width's (after the
    stem, whose first channels see the same input at every width), and the small width needs
    its own: with the full width's statistics it collapses."""
    net = copy.deepcopy(switchable_convnet)
    switchables = [m for m in net.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert len(switchables) == 3
    for sbn in switchables[1:]:
        small, big = sbn.bns[0], sbn.bns[-1]
        k = small.num_features
        assert k < big.num_features
        assert not torch.allclose(small.running_var, big.running_var[:k], rtol=0.05)
    own = evaluate_config(net, digits.test, 0.25)
    for sbn in switchables:
        k = sbn.bns[0].num_features
        sbn.bns[0].running_mean.copy_(sbn.bns[-1].running_mean[:k])
        sbn.bns[0].running_var.copy_(sbn.bns[-1].running_var[:k])
    shared = evaluate_config(net, digits.test, 0.25)
    assert own > 0.8
    assert shared < own - 0.2
    with pytest.raises(PruningError):
        net.set_width(0.6)


def test_one_step_accumulates_every_width_before_updating(digits) -> None:
    """`train_slimmable` takes one SGD step per batch on the mean of the widths' gradients:
    the update equals what SGD (nesterov, weight decay) does with the gradients accumulated
    width by width on an untouched copy."""
    net = _slim("convnet", universal=False)
    x, y = digits.train.tensors[0][:32], digits.train.tensors[1][:32]
    reference = copy.deepcopy(net).train()
    per_width = []
    for w in reversed(WIDTHS):
        reference.zero_grad()
        reference.set_width(w)
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        per_width.append({n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None})
    names = {n for g in per_width for n in g}
    mean_grad = {n: sum(g[n] for g in per_width if n in g) / len(WIDTHS) for n in names}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    cfg = SlimTrainConfig(epochs=1, lr=0.1, momentum=0.9, weight_decay=5e-4, seed=0, max_steps=1)
    train_slimmable(net, DataLoader(TensorDataset(x, y), batch_size=32), cfg, device="cpu")
    for n, p in net.named_parameters():
        d = mean_grad[n] + cfg.weight_decay * before[n]
        expected = before[n] - cfg.lr * (1 + cfg.momentum) * d
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-5)
    assert set(mean_grad) == {n for n, _ in net.named_parameters()}


def test_sandwich_rule_and_inplace_distillation(digits) -> None:
    """A universal step visits the largest width, the smallest and n random configurations;
    the largest learns from the labels, the others from its detached soft predictions."""
    net = _slim("convnet", universal=True).train()
    cfg = SlimTrainConfig(num_random=3, per_layer=True)
    configs = step_configs(net, cfg, random.Random(0))
    assert len(configs) == 5
    assert configs[0] == net.config_for_width(1.0)
    assert configs[1] == net.config_for_width(0.25)
    bounds = net.bounds()
    for c in configs[2:]:
        assert all(bounds[k][0] <= n <= bounds[k][1] for k, n in c.items())
    assert len({tuple(c.values()) for c in configs[2:]}) == 3
    x, y = digits.train.tensors[0][:16], digits.train.tensors[1][:16]
    torch.manual_seed(0)
    losses = accumulate_gradients(net, x, y, configs[:2], distill=True)
    net.zero_grad()
    with torch.no_grad():
        net.set_config(configs[0])
        teacher = net(x)
        net.set_config(configs[1])
        student = net(x)
    assert losses[0] == pytest.approx(float(torch.nn.functional.cross_entropy(teacher, y)), rel=1e-4)
    assert losses[1] == pytest.approx(float(soft_cross_entropy(student, teacher)), rel=1e-4)
    wrong = (y + 1) % 10
    net.zero_grad()
    again = accumulate_gradients(net, x, wrong, configs[:2], distill=True)
    assert again[1] == pytest.approx(losses[1], rel=1e-4)  # the smaller width never sees the labels


def test_bn_calibration_gives_exact_private_statistics(universal_convnet, digits) -> None:
    """US-Nets' calibration: after `calibrate_bn` at a configuration, the first k running
    statistics of a BN are the exact mean/variance of its input on the calibration batches."""
    net = copy.deepcopy(universal_convnet)
    config = net.random_config(random.Random(7))
    net.set_config(config)
    batches = calibration_batches(digits.train, 2, 64, seed=1)
    calibrate_bn(net, batches)
    bn = net.net.features[4]
    seen = []
    handle = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        for xb, _ in batches:
            net(xb)
    handle.remove()
    acts = torch.cat(seen)
    k = acts.shape[1]
    assert k == config["features.3"]
    per_batch = torch.stack([a.mean(dim=(0, 2, 3)) for a in seen])
    torch.testing.assert_close(bn.running_mean[:k], per_batch.mean(0), atol=1e-5, rtol=1e-4)


def test_unseen_config_after_calibration_scores_near_its_neighbours(universal_convnet, digits) -> None:
    """A random per-layer configuration (never trained as such) scores, after calibration,
    within a few points of the uniform widths around its FLOPs; with another width's
    statistics (no calibration) the smallest width scores much worse."""
    net = copy.deepcopy(universal_convnet)
    batches = calibration_batches(digits.train, 4, 64, seed=0)
    uniform = {w: (count_flops(net.export(w), SHAPE), evaluate_config(net, digits.val, w, batches)) for w in WIDTHS}
    config = net.random_config(random.Random(11))
    acc = evaluate_config(net, digits.val, config, batches)
    flops = count_flops(net, SHAPE)
    below = max((w for w in WIDTHS if uniform[w][0] <= flops), default=WIDTHS[0])
    assert acc >= uniform[below][1] - 0.05
    net.set_width(1.0)
    calibrate_bn(net, batches)
    stale = evaluate_config(net, digits.val, 0.25)
    fresh = evaluate_config(net, digits.val, 0.25, batches)
    assert fresh > stale + 0.1


def test_save_and_load_supernet_round_trip(universal_convnet, tmp_path) -> None:
    net = copy.deepcopy(universal_convnet).eval()
    path = save_supernet(net, tmp_path / "sn")
    meta = json.loads(path.read_text())
    assert meta["universal"] is True
    assert meta["widths"] == WIDTHS
    assert meta["zoo"] == "convnet"
    loaded = load_supernet(tmp_path / "sn")
    x = torch.randn(4, *SHAPE)
    for w in (0.25, 1.0):
        net.set_width(w)
        loaded.set_width(w)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(PruningError):
        load_supernet(tmp_path / "missing")
