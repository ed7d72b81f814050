"""The store side of a job's run: turn the messages a run sends through its relay
(`workers.relay`) into store writes (candidates, events, progress, the best feasible result,
checkpoints), and read what a resumed run starts from. Only the scheduler's process talks to
the database; the Ray nodes running jobs never do (docs/service.md, "Who writes the record")."""

from __future__ import annotations

import io
from typing import Any

from .store import Store

# The job's overall progress: each pipeline phase maps its own 0-1 fraction onto a span.
PHASE_SPANS = {
    "data": (0.0, 0.02),
    "train": (0.02, 0.2),
    "search": (0.2, 0.8),
    "select": (0.8, 0.85),  # the ASHA selection (search.selection: asha)
    "finetune": (0.85, 0.97),
    "export": (0.97, 0.99),
    "quantize": (0.99, 0.99),  # INT8 (quantize: {mode: int8}), after the export
    "done": (0.99, 0.99),
}
BEST_KEYS = ("proposal_id", "score", "flops", "params", "memory_bytes", "latency_ms", "phase")


def overall(phase: str, fraction: float) -> float | None:
    """A phase's own fraction as the job's overall progress (None for a phase without a span)."""
    lo, hi = PHASE_SPANS.get(phase, (None, None))
    if lo is None or hi is None:
        return None
    return lo + (hi - lo) * max(0.0, min(1.0, fraction))


def apply_messages(store: Store, job_id: int, lease: str, messages: list[tuple[Any, ...]]) -> None:
    """Write a run's messages in order (raises `LeaseLost` when the job is no longer this run's)."""
    for msg in messages:
        kind = msg[0]
        if kind == "candidate":
            store.add_candidate(job_id, lease, msg[1])
        elif kind == "phase":
            name, data = msg[1], msg[2]
            store.update_progress(job_id, lease, phase=name, progress=overall(name, 0.0))
            store.add_event(job_id, "phase", f"phase: {name}", {"phase": name, **data})
        elif kind == "progress":
            phase, fraction, label = msg[1], msg[2], msg[3]
            shown = f"{phase}: {label}" if label else phase
            store.update_progress(job_id, lease, phase=shown, progress=overall(phase, fraction))
        elif kind == "best":
            best = msg[1]
            store.update_progress(job_id, lease, best={k: best.get(k) for k in BEST_KEYS} if best else None)
        elif kind == "event":
            store.add_event(job_id, msg[1], msg[2], msg[3])
        elif kind == "checkpoint":
            store.save_checkpoint(job_id, lease, msg[1])


def resume_state(store: Store, job_id: int) -> dict[str, Any] | None:
    """The saved strategy state and every stored candidate (the record: it may run ahead of
    the checkpoint; the runner reuses stored results instead of re-evaluating them)."""
    import torch

    raw = store.load_checkpoint(job_id)
    if raw is None:
        return None
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    results = [{k: v for k, v in c.items() if k != "seq"} for c in store.stored_results(job_id)]
    return {"strategy": state, "results": results}
