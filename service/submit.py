"""From a submitted `JobConfig` to the resolved one the pipeline runs: resolve an uploaded
model to its zoo name, arguments and stored weights, check data and option paths against the
allowed roots, and refuse an infeasible target up front with `search.space.SearchSpace`
(built on the untrained architecture: resource counts do not depend on the weights) when the
network's trace is ready in time. The trace is never made in the API process: the trace
process (`service.tracer`) builds, traces and checks (`check_traced`, with its cache `Traces`),
and a target the submit could not check in time is checked by the job before it trains, in the
same words (`workers.feasibility`)."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch._dynamo  # noqa: F401 - imported once, here: the trace thread and an upload's torch.export.load would race on torch's lazy import of it
from pydantic import ValidationError
from torch import nn

from pruning.data import DEFAULT_SIZES, check_data_folder
from pruning.detection.folder import boxfolder_shape
from pruning.detection.scenes import BOX_CLASSES
from pruning.errors import PruningError
from pruning.imagefolder import imagefolder_shape
from pruning.intake import intake_program
from pruning.models import build_model
from pruning.rng import private_draws
from pruning.segmentation.folder import maskfolder_shape
from pruning.segmentation.scenes import SCENE_CLASSES
from pruning.tasks import TaskError, output_key, task_class
from pruning.tasks.detection import detection_output_mismatch
from pruning.tasks.segmentation import task_data_mismatch
from search.space import Traced as Trace
from workers.config import JobConfig
from workers.feasibility import Refused, checked_space, network_line
from workers.network import check_program_data

from .config import Settings
from .store import Store
from .text import excerpt
from .tracer import TRACER

# (in_channels, num_classes) of the sets whose shape is known without reading them
KNOWN_SHAPES = {
    "digits": (1, 10),
    "fashion-mnist": (1, 10),
    "cifar10": (3, 10),
    "synthetic": (3, 10),
    "scenes": (3, len(SCENE_CLASSES)),
    "boxscenes": (3, len(BOX_CLASSES)),
}
# Strategy/evaluator options that name files the job reads: checked like data paths.
PATH_OPTIONS = ("supernet",)
# Options that would make a job write where the user says (e.g. Optuna's storage URL): CLI only.
REFUSED_OPTIONS = ("storage",)


class SpecError(ValueError):
    """A job spec that validates field by field but cannot run (one line for a 422)."""


WARM_UP_SPEC = {
    "model": {"zoo": "resnet20"},
    "data": {"name": "synthetic"},
    "strategy": {"name": "uniform"},
    "target": {"flops": 0.5},
}


def warm_up() -> None:
    """Start the trace process, and validate one job spec, so that the modules its checks import
    on first use (every strategy, evaluator, model and task registry: a tenth of a second) are
    imported at start-up and not in a user's first submit."""
    TRACER.start()
    JobConfig.model_validate(WARM_UP_SPEC)


def check_data_path(path: str, roots: list[Path], field: str = "data.path") -> Path:
    """Resolve a data path and require it to exist under one of the allowed roots; a string
    the file system cannot take as a path (a NUL byte, a part over 255 bytes) is refused too.
    The ValueError names `field` and at most an excerpt of the path."""
    shown = excerpt(path)
    try:
        p = Path(path).expanduser().resolve()
        inside = any(p == r.resolve() or r.resolve() in p.parents for r in roots)
        exists = inside and p.exists()
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, an embedded NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{field} {shown} is not a usable path ({reason.lower()})") from exc
    if not inside:
        allowed = ", ".join(str(r) for r in roots) or "none configured (SECATEURS_ALLOWED_DATA_ROOTS)"
        raise ValueError(f"{field} {shown} is outside the allowed data roots ({allowed})")
    if not exists:
        raise ValueError(f"{field} {shown} does not exist")
    return p


def data_shape(cfg: JobConfig) -> tuple[int, int, int]:
    """(in_channels, num_classes, input_size) of a job's data, reading only folder and file
    names and a few image headers (`imagefolder_shape`, `check_data_folder`): a folder that
    holds nothing its reader can use is refused here rather than when the job runs."""
    size = cfg.data.input_size or DEFAULT_SIZES[cfg.data.name]
    if cfg.data.name == "imagefolder":
        assert cfg.data.path is not None
        channels, classes = imagefolder_shape(cfg.data.path, labels=task_class(cfg.task).needs_labels)
        return channels, classes, size
    if cfg.data.name == "maskfolder":
        assert cfg.data.path is not None
        channels, classes = maskfolder_shape(cfg.data.path)
        return channels, classes, size
    if cfg.data.name == "boxfolder":
        assert cfg.data.path is not None
        channels, classes = boxfolder_shape(cfg.data.path)
        return channels, classes, size
    if cfg.data.path:
        check_data_folder(cfg.data.name, cfg.data.path)
    c, k = KNOWN_SHAPES[cfg.data.name]
    return c, k, size


def resolve_config(spec: JobConfig, team_id: int, store: Store, settings: Settings) -> JobConfig:
    """The job as it will run (raises SpecError with the field and the reason)."""
    if spec.model.weights is not None:
        raise SpecError(
            "model.weights: a server path is not accepted; upload the file (POST /v1/models) and give model.upload"
        )
    if spec.model.program is not None:
        raise SpecError(
            "model.program: a server path is not accepted; upload the .pt2 (POST /v1/models) and give model.upload"
        )
    if spec.model.factory is not None:
        raise SpecError(
            "model.factory: not accepted by the service; install the package with a secateurs.models "
            "entry point and give model.zoo"
        )
    cfg = spec.model_copy(deep=True)
    facts: dict[str, Any] | None = None
    if spec.model.upload is not None:
        up = store.get_model(team_id, spec.model.upload)
        if up is None:
            raise SpecError(f"model.upload: model {spec.model.upload} not found")
        try:
            if up.path.endswith(".pt2"):  # a program: its architecture and weights are in the file
                if spec.model.args:
                    raise SpecError("model.args: an uploaded .pt2 program takes no arguments")
                cfg.model = type(spec.model)(program=up.path)
                facts = up.args
            else:
                cfg.model = type(spec.model)(zoo=up.zoo, args={**up.args, **spec.model.args}, weights=up.path)
        except ValidationError as exc:
            raise SpecError(f"model.args: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from exc
    for section, options in (("strategy", cfg.strategy.options), ("evaluator", cfg.evaluator.options)):
        for key in REFUSED_OPTIONS:
            if key in options:
                raise SpecError(f"{section}.options.{key}: not accepted by the service (use the CLI for it)")
        for key in PATH_OPTIONS:
            if options.get(key) is not None:
                try:
                    where = f"{section}.options.{key}"
                    options[key] = str(check_data_path(str(options[key]), settings.allowed_data_roots, where))
                except ValueError as exc:
                    raise SpecError(str(exc)) from exc
    if cfg.data.path:
        try:
            cfg.data.path = str(check_data_path(cfg.data.path, settings.allowed_data_roots))
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
    if spec.data.upload is not None:
        ds = store.get_dataset(team_id, spec.data.upload)
        if ds is None:
            raise SpecError(f"data.upload: data set {spec.data.upload} not found")
        why = task_data_mismatch(cfg.task, ds.task == "segmentation", ds.task == "detection", cfg.task_options)
        if why:
            raise SpecError(f"data.upload: {why}")
        name = {"segmentation": "maskfolder", "detection": "boxfolder"}.get(ds.task, "imagefolder")
        cfg.data = cfg.data.model_copy(update={"name": name, "path": ds.path, "upload": None})
    try:
        shape = data_shape(cfg)
    except PruningError as exc:
        where = "data.upload" if spec.data.upload is not None else "data.path" if cfg.data.path else "data"
        raise SpecError(f"{where}: {exc}") from exc
    check_data_fits(cfg, shape[0], shape[1])
    check_feasible(cfg, shape, settings.trace_wait_seconds, facts)
    return cfg


def check_feasible(
    cfg: JobConfig, shape: tuple[int, int, int], wait: float, facts: Mapping[str, Any] | None = None
) -> None:
    """The submit's checks that need the network: what can be read from an upload's stored
    facts (its input and output shapes) here, the rest (a target on the traced network, a zoo
    network that cannot be built) by the trace process within `wait` seconds (+ the round
    trip); past that the job checks the same target before it trains, in the same words."""
    if cfg.model.program is not None:
        if facts and facts.get("input_shape"):
            check_program_fits(cfg, facts["input_shape"], stored_outputs(facts))
    else:
        check_task_output(cfg, {"output": ()})  # a zoo network has one output
        if cfg.target["kind"] == "latency":
            return
    line = TRACER.check(cfg.model_dump(mode="json"), shape, facts, wait)
    if line:
        raise SpecError(line)


def check_data_fits(cfg: JobConfig, channels: int, classes: int) -> None:
    """Refuse data whose image channels or classes differ from those the model's arguments fix
    (an uploaded model's, or zoo arguments given in model.args), naming both numbers; classes
    only for a task that reads labels."""
    args = cfg.model.args
    want = args.get("num_classes")
    if want is not None and want != classes and task_class(cfg.task).needs_labels:
        raise SpecError(f"data: the data set has {classes} classes, the model outputs {want} (model.args.num_classes)")
    want = args.get("in_channels")
    if want is not None and want != channels:
        raise SpecError(f"data: the images have {channels} channels, the model takes {want} (model.args.in_channels)")


TRACE_CACHE_ENTRIES = 8
"""Traced networks one server process keeps (`Traces`); each holds its network, weights included."""

TRACE_CACHE_BYTES = 2 << 30
"""Most bytes of weights (parameters and buffers) the kept networks may hold together: eight
uploaded VGG-11-BN programs would otherwise keep 4 GB in the API process. The newest network
is kept whatever its size; older ones go first."""


def weight_bytes(net: nn.Module | None) -> int:
    """Bytes of `net`'s parameters and buffers (0 for none)."""
    if net is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))


TRACE_SWITCH_SECONDS = 0.0005
"""The interpreter's thread switch interval while the background thread traces (`Traces`)."""


@dataclass
class TracedNet:
    """A network traced for the feasibility check: the module, its input shape, its outputs'
    shapes without the batch by name (`pruning.intake.Intake.outputs`; a zoo model's one
    output: `{"output": (classes,)}`) and `search.space.trace_space`'s trace; or the error
    building or tracing it raised. `ready` is set once either is there."""

    net: nn.Module | None = None
    input_shape: tuple[int, int, int] = (0, 0, 0)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    trace: Trace | None = None
    error: Exception | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)


Build = Callable[[], tuple[nn.Module, tuple[int, int, int], dict[str, tuple[int, ...]]]]
"""Builds a network to trace: the module, its input shape (C, H, W) and its outputs."""


class Traces:
    """Traced networks by a key naming the architecture and its input (a zoo name, its
    arguments and the input shape; an uploaded program's content hash), the most recent
    `entries` kept, and fewer when their weights would exceed `max_bytes` together. Building and
    tracing a large network takes seconds (a zoo model at 224 px); checking a target on its trace
    takes milliseconds. So a network is traced once, in the trace process (`service.tracer`): a
    program at upload, a zoo network on a background thread (one trace at a time) when a submit
    first asks for it; a submit waits for it only a bounded time (`use`). `made` records each
    trace made (its key, input shape and whether it succeeded)."""

    def __init__(self, entries: int = TRACE_CACHE_ENTRIES, max_bytes: int = TRACE_CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._cache: OrderedDict[Hashable, TracedNet] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Hashable, TracedNet, Build]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self.made: list[tuple[Hashable, tuple[int, int, int], bool]] = []

    def keys(self) -> list[Hashable]:
        """The kept keys, oldest first."""
        with self._lock:
            return list(self._cache)

    def _evict_for(self, key: Hashable) -> None:
        """Drop the oldest networks (never `key`'s) until the rest fit in `max_bytes`."""
        with self._lock:
            while sum(weight_bytes(e.net) for e in self._cache.values()) > self.max_bytes:
                oldest = next((k for k in self._cache if k != key), None)
                if oldest is None:
                    return
                del self._cache[oldest]

    def _entry(self, key: Hashable) -> tuple[TracedNet, bool]:
        """The entry for `key` and whether it was made now (the caller then fills it)."""
        with self._lock:
            entry = self._cache.get(key)
            made = entry is None
            if entry is None:
                entry = self._cache[key] = TracedNet()
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return entry, made

    def _fill(self, key: Hashable, entry: TracedNet, build: Build) -> None:
        from search.space import trace_space

        with entry.lock:
            try:
                # built with draws of its own: the network's initial weights must not move the
                # seeded stream of a run in another thread of this process (the trace draws none)
                with private_draws():
                    entry.net, entry.input_shape, entry.outputs = build()
                entry.trace = trace_space(entry.net, entry.input_shape)
            except Exception as exc:  # noqa: BLE001 - kept and raised again to every caller of this key
                entry.net, entry.error = None, exc
            finally:
                self.made.append((key, entry.input_shape, entry.error is None))
                entry.ready.set()
        self._evict_for(key)

    def settle(self, wait: float) -> bool:
        """Wait at most `wait` seconds for every kept network's trace; whether they all finished."""
        with self._lock:
            entries = list(self._cache.values())
        deadline = time.monotonic() + wait
        return all(e.ready.wait(max(0.0, deadline - time.monotonic())) for e in entries)

    def _run(self) -> None:
        while True:
            key, entry, build = self._queue.get()
            with self._lock:
                kept = self._cache.get(key) is entry
            if not kept:  # one pushed out of the cache while queued is not traced (its waiters time out)
                continue
            # A trace is mostly Python holding the GIL: while it runs, the interpreter hands the
            # GIL to a thread answering a question after TRACE_SWITCH_SECONDS instead of 5 ms.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, TRACE_SWITCH_SECONDS))
            try:
                self._fill(key, entry, build)
            finally:
                sys.setswitchinterval(interval)

    def start(self, key: Hashable, build: Build) -> TracedNet:
        """The entry for `key`, its trace queued on the background thread if it was not there."""
        entry, made = self._entry(key)
        if made:
            with self._lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name="secateurs-trace", daemon=True)
                    self._worker.start()
            self._queue.put((key, entry, build))
        return entry

    def trace_now(self, key: Hashable, build: Build) -> None:
        """Trace `key` in this thread unless it is traced or being traced (an upload's trace)."""
        entry, made = self._entry(key)
        if made:
            self._fill(key, entry, build)

    @contextmanager
    def use(self, key: Hashable, build: Build, wait: float) -> Iterator[TracedNet | None]:
        """The traced network for `key` (built by `build` and traced on the background thread
        on first use), held for this caller alone while the block runs; None when it is not
        ready within `wait` seconds. A failure to build or trace is kept too and raised again."""
        entry = self.start(key, build)
        if not entry.ready.wait(wait):
            yield None
            return
        with entry.lock:
            if entry.error is not None:
                raise entry.error
            yield entry


TRACES = Traces()
"""The process's traced networks (`Traces`)."""


def program_key(path: str | Path) -> tuple[str, str]:
    """The `TRACES` key of a stored program: its file name, the content's SHA-256."""
    return ("program", Path(path).name)


WARM_WAIT_SECONDS = 300.0
"""How long an upload waits for the trace process to convert and trace the program it stores."""


def warm_program(path: str | Path) -> bool:
    """Have an uploaded program traced now (at upload, by the trace process), so its jobs'
    submits find it traced; a program that cannot be traced is remembered as such (its submits
    are refused with why). Whether the trace finished within `WARM_WAIT_SECONDS`."""
    return TRACER.warm(str(path), WARM_WAIT_SECONDS)


def warm_traced(path: str) -> None:
    """The trace process's side of `warm_program`: convert and trace the program now."""
    TRACES.trace_now(program_key(path), lambda: _intake(path))


def trace_log() -> list[dict[str, Any]]:
    """`TRACES.made` as JSON: each trace's key, input shape and whether it succeeded."""
    made = list(TRACES.made)
    return [{"key": json.loads(json.dumps(k, default=str)), "input_shape": list(s), "ok": ok} for k, s, ok in made]


def _intake(path: str) -> tuple[nn.Module, tuple[int, int, int], dict[str, tuple[int, ...]]]:
    intake = intake_program(path)
    return intake.module, intake.input_shape, intake.outputs


def check_program_fits(cfg: JobConfig, input_shape: Sequence[int], outputs: Mapping[str, Sequence[int]]) -> None:
    """Refuse a `task_output` the program does not have, and data that does not fit its input
    and that output, naming both shapes."""
    check_task_output(cfg, outputs)
    try:
        c, k, _ = data_shape(cfg)
        size = cfg.data.input_size or int(input_shape[1])
        labels = task_class(cfg.task).needs_labels
        check_program_data(input_shape, outputs, (c, size, size), k, cfg.data.name, cfg.task_output, labels)
    except PruningError as exc:
        raise SpecError(f"data: {exc}") from exc
    if cfg.task == "detection":
        why = detection_output_mismatch(outputs[output_key(list(outputs), cfg.task_output)], k, cfg.task_options)
        if why:
            raise SpecError(f"data: {why}")


def stored_outputs(facts: Mapping[str, Any]) -> dict[str, Sequence[int]]:
    """An upload's outputs by name from its stored facts (older uploads: the one output's shape)."""
    return dict(facts.get("outputs") or {"output": facts.get("output_shape") or ()})


def check_program(cfg: JobConfig, wait: float, facts: Mapping[str, Any] | None = None) -> None:
    """An uploaded program's job: the program must have the output `task_output` names, the
    data must fit the program's input and that output (a refusal names both shapes) and,
    unless the target is a latency, the target must be feasible on the converted network
    (traced once, `TRACES`). `facts` are the upload's stored facts (input and output shapes):
    the output and data are checked on them when the trace is not ready in `wait` seconds, and
    the target is then checked by the job itself (`workers.pipeline.prepare`)."""
    assert cfg.model.program is not None
    program = cfg.model.program
    try:
        with TRACES.use(program_key(program), lambda: _intake(program), wait) as traced:
            if traced is None:
                if facts and facts.get("input_shape"):
                    check_program_fits(cfg, facts["input_shape"], stored_outputs(facts))
                return
            check_program_fits(cfg, traced.input_shape, traced.outputs)
            if cfg.target["kind"] != "latency":
                check_target(cfg, traced)
    except SpecError:
        raise
    except Exception as exc:  # the program cannot be converted or traced: a refusal in our words, not a 500
        raise SpecError(network_line(cfg.model, exc)) from exc


def check_task_output(cfg: JobConfig, outputs: Mapping[str, Sequence[int]]) -> None:
    """Refuse a `task_output` the network does not have (one line naming its outputs)."""
    try:
        output_key(list(outputs), cfg.task_output)
    except TaskError as exc:
        raise SpecError(str(exc)) from exc


def check_target(cfg: JobConfig, traced: TracedNet) -> None:
    """Refuse a target the smallest network the space's bounds allow cannot meet on the traced
    network (`workers.feasibility.checked_space`, which the job runs too)."""
    assert traced.net is not None
    assert traced.trace is not None
    try:
        checked_space(cfg, traced.net, traced.input_shape, traced.trace)
    except Refused as exc:
        raise SpecError(exc.line) from exc


def check_traced(
    cfg: JobConfig,
    shape: tuple[int, int, int] | None = None,
    wait: float = 60.0,
    facts: Mapping[str, Any] | None = None,
) -> None:
    """The trace process's check (`service.tracer`): refuse a target the smallest network the
    bounds allow cannot meet (latency targets are checked by the job itself: measuring the
    lookup table takes too long for a request). `shape` is the data's `data_shape` when known.
    An uploaded program is checked by `check_program` (`facts`: its upload's). The network is
    traced once per architecture, arguments and input size (`TRACES`), on a background thread:
    when its trace is not ready within `wait` seconds the check passes and the job checks the
    same target, in the same words, before it trains anything (`workers.pipeline.prepare`)."""
    if cfg.model.program is not None:
        check_program(cfg, wait, facts)
        return
    check_task_output(cfg, {"output": ()})  # a zoo network has one output
    if cfg.target["kind"] == "latency":
        return
    c, k, size = shape or data_shape(cfg)
    classes = {"num_classes": k} if k else {}  # unlabelled images (a task that reads none): the model's own
    args: dict[str, Any] = {**classes, "in_channels": c, "input_size": size, **cfg.model.args}
    zoo = cfg.model.zoo or ""
    key = ("zoo", zoo, json.dumps(args, sort_keys=True, default=str), (c, size, size))
    try:
        with TRACES.use(key, lambda: (build_model(zoo, **args), (c, size, size), {"output": (k,)}), wait) as traced:
            if traced is not None:
                check_target(cfg, traced)
    except SpecError:
        raise
    except Exception as exc:
        line = network_line(cfg.model, exc)
        if line is None:
            raise
        raise SpecError(line) from exc
