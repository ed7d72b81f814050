"""The job sink of a run on Ray: the pipeline's reports travel as messages through a small
relay actor to the scheduler, which writes them to the store. A Ray node running a job needs
no database access, only the Ray cluster. The relay holds messages until the scheduler drains
them, in order, and carries the scheduler's stop request (a cancel or a lost lease) back."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

import torch

from search.base import Result

from .sink import JobSink, result_dict

PROGRESS_EVERY = 0.5  # seconds between progress messages (phases, candidates and events go at once)
Message = tuple[Any, ...]


class Relay:
    """The relay actor (created by the scheduler with `ray.remote(Relay)`): a message buffer and a stop flag."""

    def __init__(self) -> None:
        self.buffer: list[Message] = []
        self.stop_requested = False

    def put(self, messages: list[Message]) -> bool:
        """Append messages; returns whether a stop was requested."""
        self.buffer.extend(messages)
        return self.stop_requested

    def drain(self) -> list[Message]:
        """Every message since the last drain, in order."""
        out, self.buffer = self.buffer, []
        return out

    def stop(self) -> None:
        """Ask the run to stop (it checks between search steps)."""
        self.stop_requested = True

    def stopped(self) -> bool:
        return self.stop_requested


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """A strategy state as the bytes the store keeps (`torch.save`; read back with weights_only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class RelaySink(JobSink):
    """A `JobSink` that sends each report to a relay actor (`ray.actor.ActorHandle`)."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay
        self._last_progress = 0.0

    def _send(self, *message: Any) -> None:
        self.relay.put.remote([message])

    def phase(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        self._send("phase", name, dict(data or {}))

    def progress(self, phase: str, fraction: float, label: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY and fraction < 1.0:
            return
        self._last_progress = now
        self._send("progress", phase, float(fraction), label)

    def best(self, result: Result | None) -> None:
        self._send("best", None if result is None else result_dict(result))

    def candidate(self, result: Result) -> None:
        self._send("candidate", result_dict(result))

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._send("event", kind, message, dict(data or {}))

    def checkpoint(self, strategy_state: dict[str, Any]) -> None:
        self._send("checkpoint", checkpoint_bytes(strategy_state))

    def should_stop(self) -> bool:
        import ray

        return bool(ray.get(self.relay.stopped.remote()))

    def flush(self) -> None:
        """Wait until the relay holds every message sent so far (calls to an actor run in order)."""
        import ray

        ray.get(self.relay.put.remote([]))
