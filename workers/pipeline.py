"""A whole job, train → search → fine-tune → export, from a `JobConfig`: load the data, build
or load the model (training it first when no weights are given), search per-layer rates,
fine-tune the chosen network from the weights its evaluator scored, export it and write the
report. The CLI (`secateurs search`), notebooks (`prune_module`) and the service's Ray task
(`workers.jobrun`) all call `run_pipeline`; it reports through a `workers.sink.JobSink` and
evaluates candidates with the executor it is handed (in this process by default).

Files written to `out_dir`: `model.safetensors` + `arch.json` (rebuild with
`pruning.export.load_model`), `model.onnx` (checked against PyTorch with onnxruntime),
`report.json`, `data.json` (the data's classes and input normalisation), `candidates.csv` /
`candidates.json`, `pareto.png`, `channels.png`,
`base_model.safetensors` + `base_model.training.json` (the trained original and how it was
trained, when the job trained it) and whatever the strategy adds (e.g. sensitivity's table and plot)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning.bn import recalibrate_bn
from pruning.criteria import get_criterion
from pruning.cut import prune
from pruning.data import DataSplits, calibration_batches, dataset_size, load_dataset, without_augmentation
from pruning.device import get_device
from pruning.export import export_onnx, export_program, load_model, load_weights, save_model, save_weights
from pruning.imagefolder import Normalization
from pruning.measure import ModelStats, model_stats
from pruning.preview import PREVIEW_DIR, write_previews
from pruning.schedule import geometric_path, split_budget
from pruning.tasks import Task, TaskError, make_task, task_class, task_options
from pruning.train import (
    FinetuneConfig,
    FinetuneOutcome,
    TrainConfig,
    budget_steps,
    cached_weights,
    evaluate,
    evaluate_score,
    finetune,
    fit,
    make_reproducible,
    steps_per_epoch,
    training_key,
)
from search.base import Proposal, Result, SearchError
from search.evaluators import EvalContext, Evaluator, EvaluatorPool, make_evaluator
from search.registry import make_strategy, strategy_class
from search.report import write_candidates, write_channels_plot, write_pareto_plot
from search.runner import Executor, SearchOutcome, run_search
from search.space import SearchSpace
from search.strategies.base import Strategy

from . import selection
from .config import FinetuneSpec, JobConfig, TrainSpec
from .feasibility import Refused, checked_network, checked_space, traced_network
from .network import layer_channels, load_intake, network_name, save_network
from .quantize import INT8_FILE, quantize_job
from .sink import JobSink, ResumeState

BASE_WEIGHTS = "base_model.safetensors"
ROUNDS_DIR = "finetune-rounds"  # resume-only: the network after each finished iterative round
DATA_SPLIT_SEED = 0  # the train/val/test split is the same for every job seed
DATA_FACTS = "data.json"  # the data's shape, classes and normalisation, stored with the outputs
ExecutorFactory = Callable[[Evaluator], Executor]


@dataclass
class Prepared:
    """The job's inputs once built: data, the trained full model and its search space."""

    data: DataSplits
    model: nn.Module
    args: dict[str, Any]
    input_shape: tuple[int, int, int]
    space: SearchSpace
    calibration: list[tuple[torch.Tensor, torch.Tensor]]
    device: torch.device
    accuracy_before: float
    stats_before: ModelStats
    training: dict[str, Any] | None = None
    """What training the full model had here (`training_record`); None when it came trained."""
    task: Task = field(default_factory=make_task)
    """The job's task (`pruning.tasks`): what batches hold, the loss and the score; the
    `accuracy_*` figures are its score (named by `task.score_name`)."""
    extras_before: dict[str, float] = field(default_factory=dict)
    """The task's further test figures of the full model (e.g. detection's mAP@0.5)."""


@dataclass
class Finetuned:
    """The returned network and its scores by the job's task (accuracy for classification):
    test before / after the final fine-tune and validation after it (comparable with the
    search score); `extras_after`: the task's further test figures after it (e.g. pixel
    accuracy)."""

    model: nn.Module
    accuracy_pruned: float
    accuracy_after: float
    val_after: float
    outcome: FinetuneOutcome | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """One record per round of an iterative schedule (empty for one-shot)."""
    extras_after: dict[str, float] = field(default_factory=dict)


def train_settings(spec: TrainSpec, task: str, seed: int) -> TrainConfig:
    """The `pruning.train.TrainConfig` of a train section (the task's warm-up where it sets none)."""
    settings = spec.model_dump()
    if settings["warmup_epochs"] is None:
        settings["warmup_epochs"] = task_class(task).train_warmup_epochs
    return TrainConfig(**settings, seed=seed)


def validation_label(info: Mapping[str, Any], task: Task) -> str:
    """A training or fine-tune's progress label after a validation: how far and what it scored
    (a user watching a long training sees whether it learns, not only how far it is)."""
    return f"epoch {info['epoch']:.3g}: validation {task.score_label} {info['val_acc']:.4f}"


def finetune_settings(spec: FinetuneSpec, seed: int) -> FinetuneConfig:
    """The `pruning.train.FinetuneConfig` of a job's finetune section."""
    return FinetuneConfig(
        lr=spec.lr,
        batch_size=spec.batch_size,
        max_steps=spec.max_steps,
        epochs=spec.epochs,
        schedule=spec.schedule,
        patience=spec.patience,
        eval_every=spec.eval_every,
        kd_alpha=spec.kd_alpha,
        seed=seed,
    )


def finetune_model(
    pruned: nn.Module,
    teacher: nn.Module | None,
    data: DataSplits,
    settings: FinetuneConfig,
    device: torch.device | str,
    progress: Callable[[float, dict], None] | None = None,
    task: Task | None = None,
) -> Finetuned:
    """Fine-tune a cut network in place on the task's loss (distilling from `teacher` when
    `kd_alpha` > 0) and measure it by the task's score (classification when None): test before
    and after, validation after."""
    task = task or make_task()
    acc_pruned = evaluate(pruned, data.test, task=task)
    outcome = None
    if (settings.epochs > 0) if settings.epochs is not None else settings.max_steps > 0:
        kd_teacher = copy.deepcopy(teacher) if teacher is not None and settings.kd_alpha > 0 else None
        outcome = finetune(pruned, data, settings, teacher=kd_teacher, device=device, progress=progress, task=task)
    after = evaluate_score(pruned, data.test, task=task)
    val = evaluate(pruned, data.val, task=task)
    return Finetuned(pruned, acc_pruned, after.value, val, outcome, extras_after=after.extras)


def round_settings(settings: FinetuneConfig, train_size: int, rounds: int) -> list[FinetuneConfig]:
    """The fine-tune settings of each round of an iterative schedule: the one-shot budget
    (`pruning.train.budget_steps`) split over the rounds so that together they run exactly as many steps as
    one-shot would; each round is seeded on its own."""
    per_epoch = steps_per_epoch(train_size, settings.batch_size)
    fixed = settings.epochs is not None
    total = budget_steps(settings, train_size)
    return [
        replace(
            settings,
            epochs=part / per_epoch if fixed else None,
            max_steps=settings.max_steps if fixed else part,
            seed=settings.seed + k,
        )
        for k, part in enumerate(split_budget(total, rounds))
    ]


def _resumed_rounds(out: Path, plan: dict[str, Any]) -> tuple[int, nn.Module | None, list[dict[str, Any]]]:
    """The last round of `plan` a stopped run finished (its network and the rounds' records);
    (0, None, []) when none was."""
    root = out / ROUNDS_DIR
    for k in sorted((int(d.name.split("-")[1]) for d in root.glob("round-*") if d.is_dir()), reverse=True):
        meta = root / f"round-{k}" / "round.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved.get("plan") == plan:
                return k, load_model(root / f"round-{k}"), list(saved["rounds"])
    return 0, None, []


def iterative_finetune(
    cfg: JobConfig, prep: Prepared, best: Result, sink: JobSink, out: Path, resumed: bool
) -> Finetuned | None:
    """Reach the chosen widths in `cfg.finetune.rounds` cuts along a geometric path from the
    full network (`pruning.schedule.geometric_path`), each cut (by the job's criterion, BN
    recalibrated) followed by its share of the fine-tune budget, distilled from the unpruned
    network when `kd_alpha` > 0. Each round is a "finetune" phase with its own progress, a
    "round" event and a saved network, so a run stopped between rounds (returns None) resumes
    at the round it reached."""
    space, rounds = prep.space, cfg.finetune.rounds
    original = {g.key: g.channels for g in space.groups}
    path = geometric_path(original, space.kept(best.policy), rounds)
    settings = round_settings(finetune_settings(cfg.finetune, cfg.seed), dataset_size(prep.data.train), rounds)
    plan = json.loads(
        json.dumps(
            {"path": path, "settings": [vars(s) for s in settings], "criterion": space.criterion, "seed": cfg.seed}
        )
    )
    done, model, records = _resumed_rounds(out, plan) if resumed else (0, None, [])
    if done:
        sink.event("resumed", f"iterative fine-tune resumes after round {done}/{rounds}", {"round": done})
    current = model.to(prep.device) if model is not None else prep.model
    calib = prep.calibration if get_criterion(space.criterion).needs_data else None
    resource = space.target.resource_key
    for k in range(done, rounds):
        counts = space.count(path[k])
        sink.phase("finetune", {"round": k + 1, "rounds": rounds, resource: counts[resource]})
        cut = prune(current, path[k], space.criterion, input_shape=prep.input_shape, calibration=calib)
        recalibrate_bn(cut, prep.calibration)

        def progress(f: float, info: dict, k: int = k) -> None:
            sink.progress("finetune", (k + f) / rounds, f"round {k + 1}/{rounds}")

        tuned = finetune_model(cut, prep.model, prep.data, settings[k], prep.device, progress, prep.task)
        record = {
            "round": k + 1,
            "kept": path[k],
            resource: counts[resource],
            "budget_steps": budget_steps(settings[k], dataset_size(prep.data.train)),
            "steps": tuned.outcome.steps if tuned.outcome is not None else 0,
            "accuracy_cut": tuned.accuracy_pruned,
            "accuracy_after": tuned.accuracy_after,
            "val_accuracy_after": tuned.val_after,
        }
        records.append(record)
        folder = out / ROUNDS_DIR / f"round-{k + 1}"
        save_model(tuned.model, folder, cfg.model.zoo or "", prep.args)
        (folder / "round.json").write_text(json.dumps({"plan": plan, "rounds": records}, default=str))
        sink.event(
            "round",
            f"round {k + 1}/{rounds}: {resource} {counts[resource]:,.6g}, test {prep.task.score_name} "
            f"{tuned.accuracy_pruned:.4f} cut -> {tuned.accuracy_after:.4f} after {record['steps']} steps",
            record,
        )
        current = tuned.model
        if k + 1 < rounds and sink.should_stop():
            return None
    oneshot = space.cut(best.policy, model=prep.model)  # what one cut would have given, for the report
    recalibrate_bn(oneshot, prep.calibration)
    current.to(prep.device).eval()
    return Finetuned(
        current,
        evaluate(oneshot, prep.data.test, task=prep.task),
        records[-1]["accuracy_after"],
        records[-1]["val_accuracy_after"],
        None,
        records,
        tuned.extras_after,
    )


def finetune_policy(
    model: nn.Module,
    space: SearchSpace,
    policy: Mapping[str, float],
    data: DataSplits,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]],
    settings: FinetuneConfig,
    device: torch.device | str,
    progress: Callable[[float, dict], None] | None = None,
    task: Task | None = None,
) -> Finetuned:
    """Cut `model` for a policy, recalibrate BN and fine-tune it (the benchmarks' one-call form)."""
    pruned = space.cut(policy, model=model)
    recalibrate_bn(pruned, calibration)
    return finetune_model(pruned, model, data, settings, device, progress, task)


def training_record(outcome: FinetuneOutcome, config: TrainConfig, train_size: int) -> dict[str, Any]:
    """What training the full model did (`pruning.train.fit`), for the report: the length asked
    (`epochs`; None: until no gain, with `max_epochs` and `patience`), the epochs and steps run,
    the epoch whose weights it kept and their validation accuracy, whether patience ended it,
    and the validation accuracy after each epoch (epoch 0: the untrained network)."""
    per_epoch = steps_per_epoch(train_size, config.batch_size)
    asked: dict[str, Any] = {"epochs": config.epochs}
    if config.epochs is None:
        asked.update(max_epochs=config.max_epochs, patience=config.patience)
    if config.warmup_epochs:
        asked["warmup_epochs"] = config.warmup_epochs
    return {
        **asked,
        "epochs_run": outcome.steps / per_epoch,
        "steps": outcome.steps,
        "steps_per_epoch": per_epoch,
        "best_epoch": outcome.best_step / per_epoch,
        "best_val": outcome.best_val,
        "stopped_early": outcome.stopped_early,
        "seconds": outcome.seconds,
        "history": [[step / per_epoch, val] for step, val, _ in outcome.history],
    }


def describe_training(record: Mapping[str, Any]) -> str:
    """One line for the job's log: how long the full model trained and what it kept."""
    if record.get("epochs") is not None:
        ending = "its fixed length"
    elif record["stopped_early"]:
        ending = f"stopped after {record['patience']} epochs without a gain"
    else:
        ending = f"reached max_epochs {record['max_epochs']:g}"
    return (
        f"trained {record['epochs_run']:.3g} epochs ({record['steps']} steps, {ending}); kept epoch "
        f"{record['best_epoch']:.3g}, validation accuracy {record['best_val']:.4f}"
    )


def _sidecar(weights: Path) -> Path:
    """The training record stored beside a trained model's weights (`base_model.training.json`)."""
    return weights.with_suffix(".training.json")


def read_training(weights: Path) -> dict[str, Any] | None:
    """The training record stored beside `weights` (None when there is none)."""
    path = _sidecar(weights)
    return json.loads(path.read_text()) if path.exists() else None


def write_data_facts(data: DataSplits, out: Path) -> None:
    """Store the data's facts with the job's outputs (`data.json`): shape, class names in label
    order and the per-channel normalisation inputs take, which a resumed run reuses and a user
    of the exported model applies."""
    (out / DATA_FACTS).write_text(json.dumps(data.describe(), indent=1))


def stored_normalization(out: Path) -> Normalization | None:
    """The normalisation an earlier run of the job stored in `data.json`, if any."""
    path = out / DATA_FACTS
    if not path.exists():
        return None
    norm = json.loads(path.read_text()).get("normalization")
    return Normalization.from_dict(norm) if norm else None


def task_settings(cfg: JobConfig, data: DataSplits) -> dict[str, Any]:
    """The job's task options, with the data's class count for a task that takes one
    (`num_classes`: detection's K) when it reads the data's labels; a given count the data
    does not have is refused in one line."""
    options = dict(cfg.task_options)
    if "num_classes" not in task_options(cfg.task).model_fields or not data.num_classes:
        return options
    if options.get("labels") is False:
        return options
    given = options.setdefault("num_classes", data.num_classes)
    if given != data.num_classes:
        line = f"task option num_classes is {given}, but data set {cfg.data.name} has {data.num_classes} classes"
        raise Refused(line, line)
    return options


def checked_output(task: Task, model: nn.Module, input_shape: Sequence[int], device: torch.device) -> None:
    """Refuse, before any training, a network whose output the task cannot read (one line:
    `Task.check_output` on one blank input)."""
    if type(task).check_output is Task.check_output:
        return  # the task reads any output
    was_training = model.training
    try:
        with torch.no_grad():
            raw = model.eval()(torch.zeros(1, *input_shape, device=device))
        task.check_output(raw, int(input_shape[-1]))
    except TaskError as exc:
        raise Refused(str(exc), str(exc)) from exc
    finally:
        model.train(was_training)


def prepare(
    cfg: JobConfig, out: Path, sink: JobSink, resumed: bool, device: torch.device, cache_dir: Path | None = None
) -> Prepared:
    """Load the data, build the model, load or train its weights, build the search space. A zoo
    model without weights is taken from `cache_dir` when one with the same `training_key` was
    trained before (and put there when trained here)."""
    sink.phase("data")
    intake = load_intake(cfg.model)  # a program fixes the input size; its data must fit it
    labels = task_class(cfg.task).needs_labels
    data = load_dataset(
        cfg.data.name,
        input_size=cfg.data.input_size or (intake.input_shape[1] if intake is not None else None),
        seed=DATA_SPLIT_SEED,
        subset=cfg.data.subset,
        path=cfg.data.path,
        augment=cfg.data.augment,
        normalization=stored_normalization(out) if resumed else None,
        labels=labels,
    )
    write_data_facts(data, out)
    input_shape = (data.in_channels, data.input_size, data.input_size)
    args = {
        **({"num_classes": data.num_classes} if data.num_classes else {}),  # none: unlabelled images
        "in_channels": data.in_channels,
        "input_size": data.input_size,
        **cfg.model.args,
    }
    weights, criterion = cfg.model.weights, cfg.criterion
    brought = strategy_class(cfg.strategy.name).base_model(cfg.strategy.options, cfg.model.zoo or "", args)
    if brought is not None:  # a strategy that brings the trained model (AutoSlim: its supernet at full width)
        weights, criterion = brought
    zoo = cfg.model.zoo
    model = checked_network(cfg.model, args, intake, cfg.data.name, cfg.task_output, labels).to(device)
    options = task_settings(cfg, data)
    checked_output(make_task(cfg.task, cfg.task_output, **options), model, input_shape, device)
    for note in intake.notes if intake is not None else []:  # e.g. a reshape with two channel sizes
        sink.event("warning", f"program: {note}", {"note": note})
    calib = calibration_batches(data.train, cfg.search.calibration_batches, cfg.search.calibration_batch_size, cfg.seed)
    # before any training: a target the bounds cannot meet fails the job now, in the submit's words
    traced = traced_network(cfg.model, model, input_shape)
    space = checked_space(cfg, model, input_shape, traced, criterion=criterion, calibration=calib)
    base_path = out / BASE_WEIGHTS
    tcfg = train_settings(cfg.train, cfg.task, cfg.seed)
    training: dict[str, Any] | None = None
    cached = None
    if cache_dir is not None and not weights and zoo is not None:
        data_facts = {**cfg.data.model_dump(mode="json"), "input_size": data.input_size, "split_seed": DATA_SPLIT_SEED}
        cached = cached_weights(cache_dir, zoo, training_key(zoo, args, data_facts, tcfg))
    if weights:
        load_weights(model, weights)
    elif intake is not None:
        pass  # a program carries its trained weights
    elif resumed and base_path.exists():
        load_weights(model, base_path)
        training = read_training(base_path)
    elif cached is not None and cached.exists():
        load_weights(model, cached)
        save_weights(model, base_path)
        training = read_training(cached)
        if training is not None:
            _sidecar(base_path).write_text(json.dumps(training))
        sink.event("cached", f"trained {zoo} taken from the cache", {"path": str(cached)})
    else:
        sink.phase("train")
        learner = make_task(cfg.task, cfg.task_output, **options)  # no teacher: there is none yet
        outcome = fit(
            model,
            data,
            tcfg,
            device=device,
            progress=lambda f, info: sink.progress("train", f, validation_label(info, learner)),
            task=learner,
        )
        training = training_record(outcome, tcfg, dataset_size(data.train))
        save_weights(model, base_path)
        _sidecar(base_path).write_text(json.dumps(training))
        sink.event("trained", describe_training(training), {k: v for k, v in training.items() if k != "history"})
        if cached is not None:  # written whole, then moved in: a reader never sees half a file
            _sidecar(cached).write_text(json.dumps(training))
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            save_weights(model, tmp)
            os.replace(tmp, cached)
    model.to(device).eval()
    task = make_task(cfg.task, cfg.task_output, teacher=model, **options)
    before = evaluate_score(model, data.test, task=task)
    return Prepared(
        data,
        model,
        args,
        input_shape,
        space,
        calib,
        device,
        before.value,
        model_stats(model, input_shape, runtime=cfg.runtime),
        training,
        task,
        before.extras,
    )


def build_search(cfg: JobConfig, prep: Prepared, resume: ResumeState | None) -> tuple[Strategy, Evaluator]:
    """The strategy (restored from `resume` when given) and the job's default evaluator."""
    cls = strategy_class(cfg.strategy.name)
    ev_name = cfg.evaluator.name or cls.default_evaluator
    ctx = EvalContext(
        model=prep.model,
        data=prep.data,
        input_shape=prep.input_shape,
        criterion=prep.space.criterion,
        device=prep.device,
        calibration=prep.calibration,
        seed=cfg.seed,
        space=prep.space,
        val_batches=cfg.search.val_batches,
        task=prep.task,
    )
    evaluator = make_evaluator(ev_name, ctx, **cfg.evaluator.options)
    options = dict(cfg.strategy.options)
    if cfg.search.selection == "asha":  # the job picks among the candidates itself
        options = cls.without_selection(options)
    strategy = make_strategy(cfg.strategy.name, prep.space, seed=cfg.seed, **options)
    if resume is not None:
        strategy.load_state_dict(resume.strategy, resume.results)
    return strategy, evaluator


def search_events(sink: JobSink) -> Callable[[dict[str, Any]], None]:
    """The runner's events as sink calls: progress, the strategy's best (the runner reports only
    one that meets the target), work and stops."""
    last_best: list[int | None] = [None]

    def on_event(ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "progress":
            sink.progress("search", float(ev.get("fraction", 0.0)), str(ev.get("phase") or "") or None)
            best = ev.get("best")
            if isinstance(best, Result) and best.proposal_id != last_best[0]:
                last_best[0] = best.proposal_id
                sink.best(best)
        elif kind == "stopped":
            sink.event("stopped", "search stopped", {k: v for k, v in ev.items() if k != "type"})
        elif kind == "work":
            sink.event("work", str(ev.get("phase", "work")), {k: v for k, v in ev.items() if k != "type"})

    return on_event


def chosen_model(evaluator: Evaluator, best: Result, prep: Prepared) -> tuple[nn.Module, str]:
    """The network the search scored for its chosen result, to fine-tune from: the evaluator's
    own model (fine-tuned, reconstructed or BN-recalibrated, as it scored it) when the
    evaluator gives a plain cut network, otherwise the cut network with BN recalibrated."""
    proposal = Proposal(
        id=best.proposal_id,
        policy=best.policy,
        phase=best.phase,
        evaluator=best.meta.get("evaluator"),
        evaluator_options=dict(best.meta.get("evaluator_options") or {}),
    )
    scorer = EvaluatorPool(evaluator).for_proposal(proposal)
    if scorer.gives_cut_model:
        model, _ = scorer.scored_model(best.policy, best.phase)
        return model, scorer.name
    pruned = prep.space.cut(best.policy, model=prep.model)
    recalibrate_bn(pruned, prep.calibration)
    return pruned, "adaptive-bn"


def export(cfg: JobConfig, prep: Prepared, tuned: Finetuned, outcome: SearchOutcome, out: Path) -> dict[str, str]:
    """Write the model (safetensors + arch, ONNX), the candidates and the plots; returns the files."""
    assert outcome.best is not None
    files = {k: str(v) for k, v in save_network(tuned.model, out, cfg.model, prep.args, prep.input_shape).items()}
    if cfg.onnx:
        onnx_path = out / "model.onnx"
        export_onnx(tuned.model, onnx_path, prep.input_shape)
        files["onnx"] = str(onnx_path)
        tuned.model.to(prep.device)
    files.update({k: str(v) for k, v in write_candidates(outcome.results, out).items()})
    space = prep.space
    files["pareto_plot"] = str(
        write_pareto_plot(
            outcome.results, outcome.pareto, outcome.best, space, out / "pareto.png", prep.task.score_label
        )
    )
    files["channels_plot"] = str(write_channels_plot(space, space.kept(outcome.best.policy), out / "channels.png"))
    val = without_augmentation(prep.data.val)
    if write_previews(prep.task, prep.model, tuned.model, val, prep.data.normalization, out, prep.device):
        files["previews"] = str(out / PREVIEW_DIR)
    return files


def _class_scores(
    task: Task, before: Mapping[str, float], after: Mapping[str, float], classes: Sequence[str] | None
) -> dict[str, Any]:
    """The summary's per-class figures named by class (`class_scores`, `class_scores_before`),
    when the task gives any and the data set names its classes."""
    names = list(classes or [])
    found = {"class_scores_before": task.class_scores(before, names), "class_scores": task.class_scores(after, names)}
    return {k: v for k, v in found.items() if v}


def summarize(
    cfg: JobConfig,
    prep: Prepared,
    tuned: Finetuned,
    outcome: SearchOutcome,
    ev_name: str,
    start: str,
    files: dict[str, str],
    out: Path,
) -> dict[str, Any]:
    """The job's summary (the API's `summary`, the CLI's `--json`)."""
    best, space = outcome.best, prep.space
    assert best is not None
    after = model_stats(tuned.model, prep.input_shape, runtime=cfg.runtime)
    before = prep.stats_before
    ft = tuned.outcome
    return {
        "status": "done",
        "strategy": cfg.strategy.name,
        "evaluator": ev_name,
        "criterion": space.criterion,
        "target": cfg.target_spec.describe(),
        "budget": space.budget,
        "model": network_name(cfg.model),
        "data": cfg.data.name,
        "task": cfg.task,
        "score_name": prep.task.score_name,  # what the accuracy_* figures and the scores measure
        "dataset": prep.data.describe(),
        "policy": space.full_policy(best.policy),
        "kept_channels": space.kept(best.policy),
        "original_channels": {g.key: g.channels for g in space.groups},
        "layer_channels": layer_channels(prep.model, tuned.model),
        "pinned_groups": dict(space.engine_pins),
        "accuracy_before": prep.accuracy_before,
        "base_training": prep.training,
        "accuracy_pruned": tuned.accuracy_pruned,
        "accuracy_after": tuned.accuracy_after,
        "val_accuracy_after": tuned.val_after,
        "search_score": best.score,
        **({"score_extras_before": prep.extras_before} if prep.extras_before else {}),
        **({"score_extras": tuned.extras_after} if tuned.extras_after else {}),
        **_class_scores(prep.task, prep.extras_before, tuned.extras_after, prep.data.describe().get("classes")),
        "finetune_start": start,
        "finetune_schedule": cfg.finetune.prune_schedule,
        "finetune_steps": sum(r["steps"] for r in tuned.rounds) if tuned.rounds else ft.steps if ft is not None else 0,
        "finetune_stopped_early": ft.stopped_early if ft is not None else False,
        "finetune_rounds": tuned.rounds,
        "flops_before": before.flops,
        "flops_after": after.flops,
        "params_before": before.params,
        "params_after": after.params,
        "memory_bytes_before": before.memory_bytes,
        "memory_bytes_after": after.memory_bytes,
        "latency_ms_before": before.latency_ms,
        "latency_ms_after": after.latency_ms,
        "latency_ms_predicted": best.latency_ms,
        "runtime": cfg.runtime,  # what the latency figures were measured (and the table built) in
        "candidates": len(outcome.results),
        "search_seconds": outcome.seconds,
        "candidates_per_second": outcome.candidates_per_second,
        "pareto": [
            {"proposal_id": r.proposal_id, "score": r.score, outcome.resource: getattr(r, outcome.resource)}
            for r in outcome.pareto
        ],
        "device": str(prep.device),
        "seed": cfg.seed,
        "out_dir": str(out),
        "files": files,
    }


def finalists(results: Iterable[Result], space: SearchSpace, n: int) -> list[Result]:
    """The `n` best candidates by search score that meet the target, one per network (distinct
    kept widths), earlier first on ties; earlier selections' results left out."""
    seen: set[tuple[int, ...]] = set()
    out: list[Result] = []
    for r in sorted(results, key=lambda r: (-r.score, r.proposal_id)):
        widths = tuple(space.kept(r.policy).values())
        if r.kind != "candidate" or r.phase == selection.PHASE or widths in seen or not space.meets(r):
            continue
        seen.add(widths)
        out.append(r)
        if len(out) == n:
            break
    return out


def asha_selection(
    cfg: JobConfig, prep: Prepared, outcome: SearchOutcome, sink: JobSink
) -> tuple[Result, nn.Module, dict[str, Any]]:
    """The job's final pick by Ray Tune trials under ASHA (`workers.selection`) among the best
    `search.selection_candidates` feasible candidates: each trial's result is recorded as a
    candidate of phase "asha" (a resumed job reuses them instead of running the trials again);
    returns the winner, its network rebuilt here and a summary of the selection."""
    s, space = cfg.search, prep.space
    plan = selection.AshaPlan(
        candidates=s.selection_candidates,
        max_steps=s.selection_steps,
        reduction=s.selection_reduction,
        lr=s.selection_lr,
        batch_size=cfg.finetune.batch_size,
        seed=cfg.seed,
        val_batches=prep.task.candidate_batches(s.val_batches, 256),  # 256: `evaluate`'s batch size
    )
    done = [r for r in outcome.results if r.phase == selection.PHASE]
    if not done:
        pool = finalists(outcome.results, space, plan.candidates)
        if not pool:
            raise SearchError("no candidate meets the target: nothing for the ASHA selection to pick from")
        sink.phase(
            "select",
            {"method": "asha", "candidates": len(pool), "iterations": plan.iterations, "chunk_steps": plan.chunk},
        )
        trials = selection.asha_select(
            prep.model,
            prep.data,
            prep.calibration,
            prep.input_shape,
            space.criterion,
            [space.kept(r.policy) for r in pool],
            plan,
            max_concurrent=s.batch_size,
            on_trial=lambda i, n: sink.progress("select", i / n, f"ASHA: {i}/{n} trials"),
            task=prep.task,
        )
        first = max(r.proposal_id for r in outcome.results) + 1
        for t in trials:
            src = pool[t.index]
            r = Result(
                proposal_id=first + t.index,
                policy=dict(src.policy),
                score=t.val_acc,
                flops=src.flops,
                params=src.params,
                memory_bytes=src.memory_bytes,
                latency_ms=src.latency_ms,
                phase=selection.PHASE,
                meta={
                    "evaluator": selection.PHASE,
                    "source": src.proposal_id,
                    "source_score": src.score,
                    "steps": t.steps,
                    "node": t.node,
                },
            )
            sink.candidate(r)
            outcome.results.append(r)
            done.append(r)
    trial = selection.winner([selection.Trial(i, int(r.meta["steps"]), r.score) for i, r in enumerate(done)])
    win = done[trial.index]
    model = selection.replay(
        prep.model,
        prep.data,
        prep.calibration,
        prep.input_shape,
        space.criterion,
        space.kept(win.policy),
        plan,
        trial.steps,
        prep.device,
        prep.task,
    )
    info = {
        "method": "asha",
        "candidates": len(done),
        "steps": sum(int(r.meta["steps"]) for r in done),
        "longest_steps": plan.chunk * plan.iterations,
        "winner": win.proposal_id,
        "winner_steps": trial.steps,
        "winner_score": win.score,
    }
    sink.event(
        "selection",
        f"ASHA picked candidate {win.meta['source']} (validation {win.score:.4f} after {trial.steps} steps); "
        f"{info['steps']} fine-tune steps over {len(done)} trials",
        info,
    )
    return win, model, info


def stopped(cfg: JobConfig, outcome: SearchOutcome, out: Path, sink: JobSink) -> dict[str, Any]:
    """The summary of a run asked to stop (during the search or between iterative rounds)."""
    sink.phase("stopped")
    return {
        "status": "stopped",
        "strategy": cfg.strategy.name,
        "candidates": len(outcome.results),
        "search_seconds": outcome.seconds,
        "out_dir": str(out),
    }


def run_pipeline(
    config: JobConfig | Mapping[str, Any],
    out_dir: str | Path,
    sink: JobSink | None = None,
    resume: ResumeState | None = None,
    executor_factory: ExecutorFactory | None = None,
    device: str | torch.device = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run a whole job (see the module docstring) and return its summary. `resume` continues an
    interrupted run from its strategy state and stored candidates without re-evaluating them;
    `executor_factory(evaluator)` gives the candidate executor (e.g. Ray actors); `cache_dir`
    keeps trained base models by their `pruning.train.training_key` across jobs. The same
    config and seed give the same numbers on the same kind of machine (seeded data order,
    deterministic kernels; the caller fixes the thread count)."""
    cfg = JobConfig.model_validate(config)
    sink = sink or JobSink()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_reproducible(cfg.seed)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg, out, sink, resume is not None, get_device(device), cache)
    for key, why in prep.space.engine_pins.items():  # groups the engine cannot cut: kept whole, said so
        group = prep.space.by_key[key]
        sink.event("warning", group.describe_pin(), {"group": key, "layers": group.members, "reason": why})
    strategy, evaluator = build_search(cfg, prep, resume)
    sink.phase(
        "search", {"strategy": cfg.strategy.name, "evaluator": evaluator.name, "budget": float(prep.space.budget)}
    )
    executor = executor_factory(evaluator) if executor_factory is not None else None
    try:
        outcome = run_search(
            strategy,
            evaluator,
            executor=executor,
            batch_size=cfg.search.batch_size,
            on_result=sink.candidate,
            on_event=search_events(sink),
            should_stop=sink.should_stop,
            checkpoint=sink.checkpoint,
            previous=resume.results if resume is not None else None,
            max_candidates=cfg.search.max_candidates,
        )
    finally:
        strategy.close()  # e.g. AMC's RLlib training thread
    if outcome.stopped and not outcome.capped and not strategy.done:
        return stopped(cfg, outcome, out, sink)  # asked to stop (a search capped by max_candidates goes on)
    best = outcome.best
    if best is None:
        raise SearchError(f"strategy {cfg.strategy.name!r} finished without a result")
    selected: tuple[nn.Module, dict[str, Any]] | None = None
    if cfg.search.selection == "asha":
        close = getattr(executor, "close", None)
        if callable(close):
            close()  # the evaluation actors' CPUs go to the trials
        best, picked, info = asha_selection(cfg, prep, outcome, sink)
        outcome.best, selected = best, (picked, info)
    sink.best(best)
    strategy.write_artifacts(out)

    if cfg.finetune.prune_schedule == "iterative":
        start = "full network, iterative"
        maybe = iterative_finetune(cfg, prep, best, sink, out, resume is not None)
        if maybe is None:
            return stopped(cfg, outcome, out, sink)
        tuned = maybe
    else:
        sink.phase("finetune")
        start_model, start = (selected[0], "asha") if selected is not None else chosen_model(evaluator, best, prep)
        tuned = finetune_model(
            start_model,
            prep.model,
            prep.data,
            finetune_settings(cfg.finetune, cfg.seed),
            prep.device,
            progress=lambda f, info: sink.progress("finetune", f, validation_label(info, prep.task)),
            task=prep.task,
        )
    score_name = prep.task.score_name
    if tuned.val_after < best.score - 1e-9:
        sink.event(
            "warning",
            f"the returned model's validation {score_name} {tuned.val_after:.4f} is below the chosen "
            f"candidate's search score {best.score:.4f}",
            {"val_accuracy_after": tuned.val_after, "search_score": best.score},
        )

    sink.phase("export")
    files = export(cfg, prep, tuned, outcome, out)
    summary = summarize(cfg, prep, tuned, outcome, evaluator.name, start, files, out)
    if selected is not None:
        summary["selection"] = selected[1]
    if tuned.val_after < best.score - 1e-9:
        summary["warning"] = (
            f"validation {score_name} after the fine-tune ({tuned.val_after:.4f}) is below the search "
            f"score ({best.score:.4f})"
        )
    latencies = [summary[k] for k in ("latency_ms_before", "latency_ms_after", "latency_ms_predicted")]
    if all(v is not None for v in latencies):
        miss = prep.space.target.measured_miss(
            summary["latency_ms_before"], summary["latency_ms_after"], summary["latency_ms_predicted"], cfg.runtime
        )
        if miss:
            sink.event("warning", miss, {k: summary[k] for k in ("latency_ms_before", "latency_ms_after")})
            summary["warning"] = f"{summary['warning']}; {miss}" if summary.get("warning") else miss
    if cfg.quantize.mode is not None:  # after the export: INT8 is made from model.onnx
        summary["quantize"] = quantize_job(cfg.quantize, prep.data, prep.input_shape, out, sink, cfg.seed)
        summary["files"]["onnx_int8"] = str(out / INT8_FILE)
    report = {**summary, "config": cfg.model_dump(mode="json"), "space": prep.space.describe()}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    summary["files"]["report"] = str(out / "report.json")
    shutil.rmtree(out / ROUNDS_DIR, ignore_errors=True)  # resume-only state, not an artifact
    sink.phase("done")
    return summary


def prune_module(
    module: nn.Module,
    example_input: torch.Tensor,
    config: Mapping[str, Any],
    out_dir: str | Path,
    sink: JobSink | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Run a whole job on a network in memory, as the service runs it on an uploaded program:
    `module` (with its trained weights) is exported with a dynamic batch from `example_input`
    (one batch, N x C x H x W) to `out_dir/input.pt2`, and `run_pipeline` takes that program.
    `config` is a job config without `model` (data, target, strategy, ...). Returns the summary;
    `out_dir` gets the pruned network as `model.pt2`, `model.safetensors` and `model.onnx`.

        from workers.pipeline import prune_module
        summary = prune_module(net, torch.randn(2, 3, 32, 32), {"data": {"name": "cifar10", "path": "data/"},
                               "target": {"flops": 0.5}, "strategy": {"name": "eagleeye"}}, "out/")"""
    if "model" in config:
        raise SearchError("prune_module takes the network as `module`; leave model out of the config")
    if example_input.dim() != 4:
        raise SearchError(f"example_input must be one N x C x H x W batch, got shape {list(example_input.shape)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    program = export_program(module, out / "input.pt2", tuple(example_input.shape[1:]))
    return run_pipeline({**config, "model": {"program": str(program)}}, out, sink, device=device)
