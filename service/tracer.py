"""The trace process: a submit checks its target on the network's channel groups, and those are
built and traced in a child process of the API server (`python -m service.tracer`), never in
the API process. A trace is seconds of Python holding the interpreter lock, with stretches of a
quarter second inside C calls that never let go of it: with the trace on a thread of the API
process, submits took up to 256 ms while a 224 px network was traced, against 4-9 ms otherwise
(docs/results/submit-latency.md). In a process of its own, at a lower priority, it costs the
API's requests nothing.

The API writes one JSON line per question to the child's stdin and waits a bounded time for
the line that answers it (`Tracer`); the child (`serve`) answers each question on a thread of
its own from its trace cache (`service.submit.Traces`, the code the API process used to run).
The child is started with the app (or on first use), started again if it dies, terminated when
the API process closes it, and exits by itself when its stdin ends (the API process died)."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, Any

log = logging.getLogger("secateurs.tracer")

REPLY_SLACK_SECONDS = 0.025
"""How much longer than the trace wait the API waits for the child's answer (the round trip)."""

CHILD_NICE = 10
"""The child's niceness: the API's requests go first when both want a CPU."""


class Tracer:
    """The API side of the trace process: `check` asks whether a resolved job config is refused
    (its one-line reason) and `warm` has an uploaded program traced. Thread-safe."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command = list(command or [sys.executable, "-m", "service.tracer"])
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._outbox: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        atexit.register(self.close)

    def start(self) -> None:
        """Start the child now unless it runs (it takes a few seconds to import what it needs:
        a server starts it with the app, so its first submits find it answering)."""
        self._started()

    def _started(self) -> subprocess.Popen[str] | None:
        """The running child, started now if there is none (None if it cannot start)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self._proc
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            except OSError as exc:
                log.warning("the trace process cannot start (%s): submits leave target checks to the jobs", exc)
                return None
            self._proc, self._outbox = proc, queue.SimpleQueue()
            assert proc.stdout is not None
            assert proc.stdin is not None
            for work, args, name in (
                (self._read, (proc, proc.stdout), "out"),
                (self._write, (proc.stdin, self._outbox), "in"),
            ):
                threading.Thread(target=work, args=args, name=f"secateurs-tracer-{name}", daemon=True).start()
            return proc

    def _write(self, inp: IO[str], outbox: queue.SimpleQueue[tuple[int, str] | None]) -> None:
        """Send the questions still waited for, in order. On a thread of its own: a child busy
        importing or tracing may not read for seconds, and a full pipe must block no request."""
        while (item := outbox.get()) is not None:
            qid, line = item
            with self._lock:
                if qid not in self._pending:  # its asker stopped waiting
                    continue
            try:
                inp.write(line)
                inp.flush()
            except (OSError, ValueError):  # the child is gone: `_read` sees it end
                return

    def _read(self, proc: subprocess.Popen[str], out: IO[str]) -> None:
        """Hand each answer to the caller waiting for it (one that stopped waiting drops it)."""
        for line in out:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                future = self._pending.pop(answer.get("id"), None)
            if future is not None:
                future.set_result(answer)
        with self._lock:  # the child is gone: nobody waits for it any more
            if self._proc is proc:
                self._proc = None
            lost = list(self._pending.values())
            self._pending.clear()
        for future in lost:
            future.set_result({})
        proc.wait()

    def ask(self, question: Mapping[str, Any], timeout: float | None) -> dict[str, Any] | None:
        """The child's answer to `question`, or None if none came within `timeout` seconds
        (None: wait as long as it takes) or the child is not running."""
        if self._started() is None:
            return None
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            qid = next(self._ids)
            self._pending[qid] = future
            outbox = self._outbox
        outbox.put((qid, json.dumps({**question, "id": qid}) + "\n"))
        try:
            return future.result(timeout) or None
        except FutureTimeout:
            with self._lock:
                self._pending.pop(qid, None)
            return None

    def check(
        self, config: Mapping[str, Any], shape: Sequence[int], facts: Mapping[str, Any] | None, wait: float
    ) -> str | None:
        """The one-line refusal of a resolved job config (`JobConfig.model_dump(mode="json")`)
        whose target its network cannot meet, or that the network cannot be traced; None when it
        passes or no answer came within `wait` (+ the round trip): the job checks it then."""
        answer = self.ask(
            {"op": "check", "config": dict(config), "shape": list(shape), "facts": facts, "wait": wait},
            wait + REPLY_SLACK_SECONDS,
        )
        return None if answer is None else answer.get("refused")

    def warm(self, program: str, timeout: float) -> bool:
        """Have the child convert and trace an uploaded program now; whether it finished within
        `timeout` seconds (it goes on past it)."""
        return self.ask({"op": "warm", "program": program}, timeout) is not None

    def traced(self, wait: float = 120.0) -> list[dict[str, Any]]:
        """Every trace the child has made (`key`, `input_shape`, `ok`), once those it has begun
        are done (at most `wait` seconds): what a test or an operator asks."""
        answer = self.ask({"op": "traced", "wait": wait}, wait + 30)
        return [] if answer is None else list(answer.get("traces", []))

    def close(self) -> None:
        """Stop the child: terminated, killed if it is not gone within 5 s. (Not by closing its
        stdin: a write blocked on a child that reads nothing holds the pipe, and closing it
        would wait for that write.)"""
        with self._lock:
            proc, self._proc = self._proc, None
            self._outbox.put(None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


TRACER = Tracer()
"""The API process's trace process."""


# --- the child ---


def _answer(question: dict[str, Any], before: Sequence[threading.Thread]) -> dict[str, Any]:
    """The answer to one question; `before` are the threads still answering earlier ones."""
    from pydantic import ValidationError

    from workers.config import JobConfig

    from .submit import TRACES, SpecError, check_traced, trace_log, warm_traced

    op = question.get("op")
    if op == "check":
        try:
            cfg = JobConfig.model_validate(question["config"])
            check_traced(cfg, tuple(question["shape"]), float(question["wait"]), question.get("facts"))
        except SpecError as exc:
            return {"refused": str(exc)}
        except ValidationError as exc:  # a config the API resolved always validates: a bug, logged
            log.exception("trace process: a config that does not validate")
            return {"error": str(exc).splitlines()[0]}
        return {"refused": None}
    if op == "warm":
        warm_traced(str(question["program"]))
        return {}
    if op == "traced":  # after the earlier questions, and the traces they began
        deadline = time.monotonic() + float(question.get("wait", 0))
        for thread in before:
            thread.join(max(0.0, deadline - time.monotonic()))
        TRACES.settle(max(0.0, deadline - time.monotonic()))
        return {"traces": trace_log()}
    return {"error": f"unknown question {op!r}"}


def serve(inp: IO[str], out: IO[str]) -> None:
    """Answer the questions read from `inp`, one thread each, on `out` (one JSON line each,
    with the question's `id`), until `inp` ends."""
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def handle(question: dict[str, Any], before: list[threading.Thread]) -> None:
        try:
            answer = _answer(question, before)
        except Exception as exc:  # one question's bug must not stop the others
            log.exception("trace process: a question failed")
            answer = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        with lock:
            out.write(json.dumps({**answer, "id": question.get("id")}) + "\n")
            out.flush()

    for line in inp:
        try:
            question = json.loads(line)
        except ValueError:
            continue
        threads[:] = [t for t in threads if t.is_alive()]
        thread = threading.Thread(target=handle, args=(question, list(threads)), daemon=True)
        threads.append(thread)
        thread.start()


def main() -> None:
    """The child: answers on the stdout it was given; anything else printed goes to stderr."""
    import torch

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    torch.set_num_threads(1)  # a trace's few tensor ops need no more; the API's requests get the rest
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(sys.stdin, out)
    out.flush()
    os._exit(0)  # the API is gone: a trace still running on a thread is of no use to anyone


if __name__ == "__main__":
    main()
