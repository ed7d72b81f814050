"""The final fine-tune (`pruning.train.finetune`): best-by-validation checkpoint (the weights
given included), step budget, early stopping with a plateau decay, and the explicit epochs
mode; training from scratch (`pruning.train.fit`) by that same loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.data import Subset

from pruning import build_model
from pruning.data import DataSplits
from pruning.train import FinetuneConfig, TrainConfig, evaluate, finetune, fit, steps_per_epoch, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(digits) -> torch.nn.Module:
    """A small convnet trained one epoch on digits (far from converged, far above chance)."""
    torch.manual_seed(0)
    model = build_model("convnet", in_channels=1, input_size=16, width=0.5)
    train(model, digits.train, TrainConfig(epochs=1, lr=0.05, seed=0), device="cpu")
    return model


@pytest.fixture(scope="module")
def perfect(digits, trained) -> DataSplits:
    """Digits with the validation split cut to the images `trained` gets right: validation
    accuracy starts at 1.0 and can never improve, so patience always runs out."""
    with torch.no_grad():
        pred = trained.eval()(torch.stack([x for x, _ in digits.val])).argmax(1)
    right = [i for i in range(len(digits.val)) if int(pred[i]) == int(digits.val[i][1])]
    return DataSplits("digits", digits.train, Subset(digits.val, right), digits.test, 10, 1, 16)


def _count_train_steps(model: torch.nn.Module) -> list[int]:
    """A counter of forward passes in train mode (one per optimizer step)."""
    calls = [0]

    def hook(module, inputs, output):
        if module.training:
            calls[0] += 1

    model.register_forward_hook(hook)
    return calls


def _cosine(lr: float, step: int, budget: int) -> float:
    return 0.5 * lr * (1 + math.cos(math.pi * step / budget))


def _replay(history: list[tuple[int, float, float]], patience: int, min_delta: float = 0.0) -> int | None:
    """The index in `history` where the patience rule says stop (None: it never fires)."""
    best, since = history[0][1], 0
    for i, (_, acc, _) in enumerate(history[1:], 1):
        if acc > best + min_delta:
            since = 0
        else:
            since += 1
        best = max(best, acc)
        if since >= patience:
            return i
    return None


def test_returns_the_best_validated_weights(digits, trained) -> None:
    model = copy.deepcopy(trained)
    cfg = FinetuneConfig(max_steps=60, eval_every=10, patience=100, lr=0.02)
    out = finetune(model, digits, cfg, device="cpu")
    accs = [acc for _, acc, _ in out.history]
    assert out.history[0] == (0, out.start_val, cfg.lr)
    assert out.start_val == evaluate(trained, digits.val)
    last_best = max(i for i, acc in enumerate(accs) if acc == max(accs))  # ties go to the later weights
    assert out.best_val == max(accs)
    assert out.best_step == out.history[last_best][0]
    assert evaluate(model, digits.val) == out.best_val
    assert out.best_val > out.start_val + 0.02  # it learned something
    assert not model.training


def test_a_diverging_run_gives_back_the_weights_it_was_given(digits, trained) -> None:
    model = copy.deepcopy(trained)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    out = finetune(model, digits, FinetuneConfig(lr=50.0, max_steps=15, eval_every=5, patience=100), device="cpu")
    assert min(acc for _, acc, _ in out.history[1:]) < out.start_val - 0.3  # it did diverge
    assert out.best_step == 0
    assert out.best_val == out.start_val
    assert evaluate(model, digits.val) == out.start_val
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k

    last = copy.deepcopy(trained)
    out_last = finetune(
        last, digits, FinetuneConfig(lr=50.0, max_steps=15, eval_every=5, patience=100, keep_best=False), device="cpu"
    )
    assert evaluate(last, digits.val) == out_last.history[-1][1] == out_last.best_val < out.start_val - 0.3


def test_max_steps_is_the_budget(digits, trained) -> None:
    model = copy.deepcopy(trained)
    calls = _count_train_steps(model)
    fractions: list[float] = []
    out = finetune(
        model,
        digits,
        FinetuneConfig(max_steps=7, eval_every=3, patience=100),
        device="cpu",
        progress=lambda f, info: fractions.append(f),
    )
    assert calls[0] == out.steps == out.budget == 7
    assert [s for s, _, _ in out.history] == [0, 3, 6, 7]  # the last step is always validated
    assert not out.stopped_early
    assert fractions == [3 / 7, 6 / 7, 1.0, 1.0]


def test_early_stopping_follows_patience_and_decays_the_rate(digits, trained, perfect) -> None:
    # A validation split the model already gets all right cannot improve: patience 2 with
    # eval_every 5 stops at step 10, after one plateau decay (patience // 2 = 1 validation).
    model = copy.deepcopy(trained)
    calls = _count_train_steps(model)
    out = finetune(model, perfect, FinetuneConfig(max_steps=1000, eval_every=5, patience=2, lr=0.001), device="cpu")
    assert out.start_val == 1.0
    assert out.stopped_early
    assert calls[0] == out.steps == 10
    # the rate recorded at a validation is the one of the step before it, under the cosine envelope
    assert [(s, lr) for s, _, lr in out.history] == [
        (0, 0.001),
        (5, pytest.approx(_cosine(0.001, 4, 1000))),
        (10, pytest.approx(_cosine(0.0001, 9, 1000))),
    ]

    # A converged model on the real split: it stops before the budget, where the rule says.
    converged = copy.deepcopy(trained)
    train(converged, digits.train, TrainConfig(epochs=6, lr=0.05, seed=1), device="cpu")
    out = finetune(converged, digits, FinetuneConfig(max_steps=1000, eval_every=5, patience=2, lr=0.001), device="cpu")
    assert out.stopped_early
    assert out.steps < 200
    assert _replay(out.history, 2) == len(out.history) - 1
    assert out.steps == out.history[-1][0]


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_a_short_budget_anneals(digits, trained, schedule) -> None:
    # both schedules follow a cosine over max_steps (patience 100: no plateau decay in 20 steps)
    model = copy.deepcopy(trained)
    out = finetune(
        model,
        digits,
        FinetuneConfig(max_steps=20, eval_every=10, patience=100, schedule=schedule, lr=0.01),
        device="cpu",
    )
    assert [lr for _, _, lr in out.history] == pytest.approx([0.01, _cosine(0.01, 9, 20), _cosine(0.01, 19, 20)])


def test_epochs_mode_runs_exactly_its_length(digits, trained, perfect) -> None:
    model = copy.deepcopy(trained)
    calls = _count_train_steps(model)
    steps_per_epoch = math.ceil(len(digits.train) / 64)
    # patience 1 on a split that cannot improve, or max_steps 3, would end a budgeted run
    # early; an explicit length ignores both
    out = finetune(model, perfect, FinetuneConfig(epochs=1.2, max_steps=3, patience=1, eval_every=5), device="cpu")
    assert calls[0] == out.steps == out.budget == math.ceil(1.2 * steps_per_epoch)  # 21, where round() gives 20
    assert not out.stopped_early
    assert out.history[-1][0] == out.steps
    assert [s for s, _, _ in out.history] == [0, 5, 10, 15, 20, 21]
    assert evaluate(model, perfect.val) == out.best_val == max(acc for _, acc, _ in out.history)


def test_distillation_and_config_checks(digits, trained) -> None:
    plain, kd = copy.deepcopy(trained), copy.deepcopy(trained)
    cfg = {"max_steps": 5, "eval_every": 5, "patience": 100, "keep_best": False}
    finetune(plain, digits, FinetuneConfig(**cfg), device="cpu")
    finetune(kd, digits, FinetuneConfig(**cfg, kd_alpha=0.9), teacher=copy.deepcopy(trained), device="cpu")
    assert not torch.equal(plain.fc2.weight, kd.fc2.weight)
    with pytest.raises(ValueError, match="schedule must be one of"):
        FinetuneConfig(schedule="linear")
    with pytest.raises(ValueError, match="patience must be >= 1"):
        FinetuneConfig(patience=0)


def test_training_from_scratch_stops_when_validation_stops_improving(digits) -> None:
    """Until no gain (`epochs` None, the default): validated once an epoch, stopped `patience`
    epochs after the last gain, well within `max_epochs`, with the best epoch's weights
    (patience 2 instead of the default 5 keeps the test short)."""
    torch.manual_seed(0)
    model = build_model("convnet", in_channels=1, input_size=16, width=0.5)
    calls = _count_train_steps(model)
    cfg = TrainConfig(patience=2, seed=0)
    per_epoch = steps_per_epoch(len(digits.train), cfg.batch_size)
    out = fit(model, digits, cfg, device="cpu")
    assert out.budget == cfg.max_epochs * per_epoch
    assert out.stopped_early
    assert calls[0] == out.steps < out.budget
    assert [s for s, _, _ in out.history] == [k * per_epoch for k in range(len(out.history))]
    assert _replay(out.history, cfg.patience) == len(out.history) - 1
    accs = [acc for _, acc, _ in out.history]
    assert evaluate(model, digits.val) == out.best_val == max(accs) > 0.9
    # a fixed length is run whole, and `train` (fixed-length only) refuses the open-ended default
    fixed = build_model("convnet", in_channels=1, input_size=16, width=0.5)
    steps = _count_train_steps(fixed)
    assert fit(fixed, digits, TrainConfig(epochs=1, seed=0), device="cpu").steps == steps[0] == per_epoch
    with pytest.raises(ValueError, match="needs epochs"):
        train(fixed, digits.train, TrainConfig())


def test_a_warm_up_raises_the_rate_linearly_under_the_cosine(digits, trained) -> None:
    """`warmup_steps`: step k (from 0) takes (k + 1) / warmup of the cosine's rate until the
    warm-up ends; `fit` turns `warmup_epochs` into steps; `train` warms up the same way."""
    model = copy.deepcopy(trained)
    cfg = FinetuneConfig(max_steps=8, eval_every=1, patience=100, schedule="cosine", lr=0.04, warmup_steps=4)
    out = finetune(model, digits, cfg, device="cpu")
    expected = [0.04] + [_cosine(0.04, k, 8) * min(1.0, (k + 1) / 4) for k in range(8)]
    assert [lr for _, _, lr in out.history] == pytest.approx(expected)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        FinetuneConfig(warmup_steps=-1)
    # from scratch: half an epoch of warm-up is ceil(per_epoch / 2) steps of the same ramp
    torch.manual_seed(0)
    scratch = build_model("convnet", in_channels=1, input_size=16, width=0.5)
    tcfg = TrainConfig(epochs=1, lr=0.04, seed=0, warmup_epochs=0.5)
    per_epoch = steps_per_epoch(len(digits.train), tcfg.batch_size)
    rates: list[float] = []
    opt_step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return opt_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        fit(scratch, digits, tcfg, device="cpu")
        fit_rates, rates[:] = list(rates), []
        train(build_model("convnet", in_channels=1, input_size=16, width=0.5), digits.train, tcfg, device="cpu")
    warm = math.ceil(per_epoch / 2)
    ramp = [_cosine(0.04, k, per_epoch) * min(1.0, (k + 1) / warm) for k in range(per_epoch)]
    assert fit_rates == pytest.approx(ramp)
    assert rates == pytest.approx(ramp)
    assert fit_rates[0] == pytest.approx(0.04 / warm)
