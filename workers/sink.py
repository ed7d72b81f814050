"""Where a running job's record goes: the narrow interface (`JobSink`) through which the
pipeline reports phases, progress, candidates, its best feasible result, events and the
strategy's checkpoints, and asks whether to stop. The service's store implements it (through
`workers.relay` on Ray); `FileSink` keeps a local run's record in its output folder, so the
CLI and notebooks resume the same way the service does.

The record of a search is its candidates (as in Optuna's storage, trials are the record); a
checkpoint holds only the strategy's own state. A resume is that state plus the record."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from search.base import Result

CHECKPOINT = "checkpoint.pt"
RECORD = "candidates.jsonl"


@dataclass
class ResumeState:
    """What a resumed run starts from: the strategy's last checkpoint and every stored candidate."""

    strategy: dict[str, Any]
    results: list[Result] = field(default_factory=list)


def result_dict(r: Result) -> dict[str, Any]:
    """A result as plain data (the shape of a stored candidate)."""
    return r.as_dict()


def result_from_dict(d: Mapping[str, Any]) -> Result:
    """The Result a `result_dict` (or a stored candidate row, extra keys dropped) came from."""
    names = Result.__dataclass_fields__.keys()
    return Result(**{k: v for k, v in d.items() if k in names})


class JobSink:
    """Receives a job's progress. Every method has a do-nothing default, so a sink implements
    only what it keeps; `should_stop` answers False unless overridden."""

    def phase(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """A new phase of the job began (data, train, search, finetune, export, done, stopped)."""

    def progress(self, phase: str, fraction: float, label: str | None = None) -> None:
        """How far the current phase is, in [0, 1] (`label`: e.g. "NetAdapt: iteration 3")."""

    def best(self, result: Result | None) -> None:
        """The strategy's chosen result so far: always one that meets the target (None: none yet)."""

    def candidate(self, result: Result) -> None:
        """An evaluated candidate, in order; each proposal id at most once per job."""

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Something worth keeping in the job's log (a warning, a resume, strategy work)."""

    def checkpoint(self, strategy_state: dict[str, Any]) -> None:
        """The strategy's own state after a tell (the candidates are already in the record)."""

    def should_stop(self) -> bool:
        """True when the job was asked to stop (cancel)."""
        return False


class FileSink(JobSink):
    """A local run's record in its output folder: candidates appended to `candidates.jsonl`,
    the strategy state in `checkpoint.pt`, events in `events.jsonl`; `on_progress(phase,
    fraction, label)` may drive a progress bar."""

    def __init__(
        self,
        out_dir: str | Path,
        on_progress: Callable[[str, float, str | None], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.on_progress, self._stop = on_progress, stop
        self.events: list[dict[str, Any]] = []
        self.best_result: Result | None = None

    def _append(self, name: str, row: Mapping[str, Any]) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def phase(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        self.event("phase", f"phase: {name}", {"phase": name, **(data or {})})
        if self.on_progress is not None:
            self.on_progress(name, 0.0, None)

    def progress(self, phase: str, fraction: float, label: str | None = None) -> None:
        if self.on_progress is not None:
            self.on_progress(phase, fraction, label)

    def best(self, result: Result | None) -> None:
        self.best_result = result

    def candidate(self, result: Result) -> None:
        self._append(RECORD, result_dict(result))

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        row = {"kind": kind, "message": message, "data": dict(data or {})}
        self.events.append(row)
        self._append("events.jsonl", row)

    def checkpoint(self, strategy_state: dict[str, Any]) -> None:
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(strategy_state, tmp)
        tmp.replace(self.out / CHECKPOINT)

    def should_stop(self) -> bool:
        return bool(self._stop and self._stop())

    def start_fresh(self) -> None:
        """Forget an earlier run's record in this folder (a new search, not a resume)."""
        for name in (RECORD, "events.jsonl", CHECKPOINT):
            (self.out / name).unlink(missing_ok=True)


def read_resume(out_dir: str | Path) -> ResumeState | None:
    """The resume state of a local run's folder (None when it has no checkpoint)."""
    out = Path(out_dir)
    if not (out / CHECKPOINT).exists():
        return None
    state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    lines = (out / RECORD).read_text().splitlines() if (out / RECORD).exists() else []
    results = [result_from_dict(json.loads(line)) for line in lines if line.strip()]
    return ResumeState(strategy=state, results=results)
