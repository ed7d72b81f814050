"""The whole search job from a plain config dict: load the data, build or load the model
(training it first when no weights are given), search per-layer rates, cut the winner,
fine-tune it, export it and write the report. The CLI `secateurs search` and the service's
Ray workers both call `run_pipeline`.

Files written to `out_dir`: `model.safetensors` + `arch.json` (rebuild with
`pruning.export.load_model`), `model.onnx` (checked against PyTorch with onnxruntime),
`report.json`, `candidates.csv` / `candidates.json`, `pareto.png`, `channels.png`,
`checkpoint.pt` (strategy state + evaluated candidates, for `resume`), `base_model.safetensors`
(the trained original, when the job trained it) and whatever the strategy adds (e.g.
sensitivity's table and plot)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from pruning.bn import recalibrate_bn
from pruning.data import DataSplits, calibration_batches, load_dataset
from pruning.device import get_device
from pruning.export import export_onnx, load_weights, save_model, save_weights
from pruning.measure import model_stats
from pruning.models import build_model
from pruning.train import TrainConfig, evaluate, seed_everything, train

from .base import Result, SearchError
from .config import PipelineConfig, TrainSection
from .evaluators import EvalContext, make_evaluator
from .registry import make_strategy, strategy_class
from .report import write_candidates, write_channels_plot, write_pareto_plot
from .runner import run_search
from .space import SearchSpace
from .strategies.common import result_from_state, result_to_state

CHECKPOINT = "checkpoint.pt"
BASE_WEIGHTS = "base_model.safetensors"


@dataclass
class PipelineHooks:
    """Callbacks a caller may give: `on_event(dict)` for phases and progress
    (`{"type": "phase"|"progress"|"train"|..., "fraction": ..., ...}`), `on_result(Result)` per
    candidate, `should_stop()` to cancel, `checkpoint(dict)` to persist resumable state
    (`{"strategy": state, "results": [...]}`) somewhere of the caller's choosing."""

    on_event: Callable[[dict], None] | None = None
    on_result: Callable[[Result], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint: Callable[[dict], None] | None = None
    make_executor: Callable[[Any], Callable[[list], list[Result]]] | None = None  # evaluator -> executor (e.g. Ray fan-out)

    @classmethod
    def from_any(cls, hooks: Any) -> "PipelineHooks":
        """Hooks from None, a PipelineHooks, a dict of callables or any object with those attributes."""
        if hooks is None:
            return cls()
        if isinstance(hooks, cls):
            return hooks
        get = hooks.get if isinstance(hooks, Mapping) else (lambda k: getattr(hooks, k, None))
        return cls(on_event=get("on_event"), on_result=get("on_result"), should_stop=get("should_stop"),
                   checkpoint=get("checkpoint"), make_executor=get("make_executor"))


def read_checkpoint(resume: Any) -> dict[str, Any] | None:
    """A resume state from a dict, a checkpoint file or a previous job's out_dir (None if absent)."""
    if resume is None or isinstance(resume, Mapping):
        return dict(resume) if resume is not None else None
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _model_args(cfg: PipelineConfig, data: DataSplits) -> dict[str, Any]:
    return {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size,
            **cfg.model.args}


def finetune_policy(model: torch.nn.Module, space: SearchSpace, policy: Mapping[str, float], data: DataSplits,
                    calibration: Any, settings: TrainSection, seed: int, device: torch.device | str,
                    progress: Callable[[float, dict], None] | None = None) -> tuple[torch.nn.Module, float, float]:
    """Cut `model` for a policy, recalibrate BN, fine-tune (distilling from `model` when
    `kd_alpha` > 0); returns (pruned model, test accuracy before and after the fine-tune)."""
    pruned = space.cut(policy, model=model)
    recalibrate_bn(pruned, calibration)
    acc_pruned = evaluate(pruned, data.test)
    if settings.epochs > 0:
        fcfg = TrainConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size, seed=seed,
                           kd_alpha=settings.kd_alpha)
        teacher = copy.deepcopy(model) if settings.kd_alpha > 0 else None
        train(pruned, data.train, fcfg, teacher=teacher, device=device, progress=progress)
    return pruned, acc_pruned, evaluate(pruned, data.test)


def run_pipeline(config: Mapping[str, Any] | PipelineConfig, out_dir: str | Path, hooks: Any = None,
                 resume: Any = None) -> dict[str, Any]:
    """Run a whole job (see the module docstring) and return the summary dict."""
    cfg = PipelineConfig.from_dict(config)
    hk = PipelineHooks.from_any(hooks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = read_checkpoint(resume)

    def event(kind: str, **data: Any) -> None:
        if hk.on_event is not None:
            hk.on_event({"type": kind, **data})

    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    strategy_class(cfg.strategy.name)  # unknown strategy: fail before any work
    event("phase", phase="data")
    data = load_dataset(cfg.data.name, input_size=cfg.data.input_size, seed=cfg.data.seed, subset=cfg.data.subset)
    input_shape = (data.in_channels, data.input_size, data.input_size)
    args = _model_args(cfg, data)
    base_model = getattr(strategy_class(cfg.strategy.name), "base_model", None)
    if base_model is not None:  # a strategy that brings the trained model (AutoSlim: its supernet at full width)
        cfg.model.weights, cfg.criterion = base_model(cfg.strategy.options, cfg.model.zoo, args)
    model = build_model(cfg.model.zoo, **args).to(device)
    calib = calibration_batches(data.train, cfg.search.calibration_batches, cfg.search.calibration_batch_size, cfg.seed)
    space = SearchSpace(model, input_shape, cfg.target, min_channels=cfg.space.min_channels,
                        max_rate=cfg.space.max_rate, prune_stem=cfg.space.prune_stem, pinned=cfg.space.pinned,
                        round_to=cfg.space.round_to, criterion=cfg.criterion, calibration=calib)

    base_path = out / BASE_WEIGHTS
    if cfg.model.weights:
        load_weights(model, cfg.model.weights)
    elif state is not None and base_path.exists():
        load_weights(model, base_path)
    else:
        event("phase", phase="train")
        tcfg = TrainConfig(epochs=cfg.train.epochs, lr=cfg.train.lr, batch_size=cfg.train.batch_size, seed=cfg.seed)
        train(model, data.train, tcfg, device=device,
              progress=lambda f, info: event("train", fraction=f, **info))
        save_weights(model, base_path)
    model.to(device).eval()
    acc_before = evaluate(model, data.test)
    before = model_stats(model, input_shape)

    ev_name = cfg.evaluator.name or getattr(strategy_class(cfg.strategy.name), "default_evaluator", None) or "adaptive-bn"
    ctx = EvalContext(model=model, data=data, input_shape=input_shape, criterion=cfg.criterion, device=device,
                      calibration=calib, seed=cfg.seed, space=space, val_batches=cfg.search.val_batches)
    evaluator = make_evaluator(ev_name, ctx, **cfg.evaluator.options)
    strategy = make_strategy(cfg.strategy.name, space, seed=cfg.seed, **cfg.strategy.options)
    previous: list[Result] = []
    if state is not None:
        strategy.load_state_dict(state["strategy"])
        previous = [result_from_state(r) for r in state.get("results", [])]
    record: list[Result] = list(previous)

    def on_result(r: Result) -> None:
        record.append(r)
        if hk.on_result is not None:
            hk.on_result(r)

    def checkpoint(strategy_state: dict) -> None:
        blob = {"strategy": strategy_state, "results": [result_to_state(r) for r in record]}
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(out / CHECKPOINT)
        if hk.checkpoint is not None:
            hk.checkpoint(blob)

    event("phase", phase="search", strategy=cfg.strategy.name, evaluator=ev_name, budget=float(space.budget))
    executor = hk.make_executor(evaluator) if hk.make_executor is not None else None
    outcome = run_search(strategy, evaluator, executor=executor, batch_size=cfg.search.batch_size, on_result=on_result,
                         on_event=hk.on_event, should_stop=hk.should_stop, checkpoint=checkpoint,
                         previous=previous, max_candidates=cfg.search.max_candidates)
    if outcome.stopped and not strategy.done:
        event("phase", phase="stopped")
        return {"status": "stopped", "strategy": cfg.strategy.name, "candidates": len(outcome.results),
                "search_seconds": outcome.seconds, "out_dir": str(out)}
    best = outcome.best
    if best is None:
        raise SearchError(f"strategy {cfg.strategy.name!r} finished without a result")
    if hasattr(strategy, "write_artifacts"):
        strategy.write_artifacts(out)

    event("phase", phase="finetune")
    pruned, acc_pruned, acc_after = finetune_policy(
        model, space, best.policy, data, calib, cfg.finetune, cfg.seed, device,
        progress=lambda f, info: event("finetune", fraction=f, **info))
    after = model_stats(pruned, input_shape)

    event("phase", phase="export")
    files = {k: str(v) for k, v in save_model(pruned, out, cfg.model.zoo, args).items()}
    if cfg.onnx:
        onnx_path = out / "model.onnx"
        export_onnx(pruned, onnx_path, input_shape)
        files["onnx"] = str(onnx_path)
        pruned.to(device)
    kept = space.kept(best.policy)
    files.update(write_candidates(outcome.results, out))
    files["pareto_plot"] = str(write_pareto_plot(outcome.results, outcome.pareto, best, space, out / "pareto.png"))
    files["channels_plot"] = str(write_channels_plot(space, kept, out / "channels.png"))
    summary = {
        "status": "done", "strategy": cfg.strategy.name, "evaluator": ev_name, "criterion": cfg.criterion,
        "target": cfg.target.describe(), "budget": space.budget, "model": cfg.model.zoo, "data": cfg.data.name,
        "policy": space.full_policy(best.policy), "kept_channels": kept,
        "original_channels": {g.key: g.channels for g in space.groups},
        "accuracy_before": acc_before, "accuracy_pruned": acc_pruned, "accuracy_after": acc_after,
        "search_score": best.score,
        "flops_before": before.flops, "flops_after": after.flops,
        "params_before": before.params, "params_after": after.params,
        "memory_bytes_before": before.memory_bytes, "memory_bytes_after": after.memory_bytes,
        "latency_ms_before": before.latency_ms, "latency_ms_after": after.latency_ms,
        "latency_ms_predicted": best.latency_ms,
        "candidates": len(outcome.results), "search_seconds": outcome.seconds,
        "candidates_per_second": outcome.candidates_per_second,
        "pareto": [{"proposal_id": r.proposal_id, "score": r.score, outcome.resource: getattr(r, outcome.resource)}
                   for r in outcome.pareto],
        "device": str(device), "seed": cfg.seed, "out_dir": str(out), "files": files,
    }
    report = {**summary, "config": cfg.as_dict(), "space": space.describe()}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    files["report"] = str(out / "report.json")
    event("phase", phase="done")
    return summary

