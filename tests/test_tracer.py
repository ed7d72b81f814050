"""The trace process (`service.tracer`): the API process asks and waits a bounded time, whatever
the child does; a child that dies is started again; the child answers a question it does not
know with an error, and keeps answering others."""

from __future__ import annotations

import sys
import time

from service.tracer import Tracer


def test_a_child_that_reads_nothing_never_blocks_an_asker():
    """Questions to a child that does not read (one still importing, or stuck) pile up beyond
    the pipe's 64 KiB; every asker still gets its None within its own timeout."""
    tracer = Tracer([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        payload = "x" * 20_000
        slowest = 0.0
        for _ in range(40):
            t = time.perf_counter()
            assert tracer.ask({"op": "check", "padding": payload}, 0.01) is None
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 1.0, slowest
    finally:
        tracer.close()


def test_a_child_that_dies_is_started_again(monkeypatch):
    import subprocess

    from service import tracer as module

    started: list[object] = []
    real = subprocess.Popen

    def counted(*args, **kwargs):
        started.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module.subprocess, "Popen", counted)
    tracer = Tracer([sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        assert tracer.ask({"op": "traced"}, 10) is None  # the child ended before answering
        assert tracer.ask({"op": "traced"}, 10) is None
        assert len(started) == 2  # a new child for the next question
    finally:
        tracer.close()


def test_the_child_answers_and_refuses_unknown_questions():
    tracer = Tracer()
    try:
        assert tracer.traced(wait=0) == []  # nothing traced yet (the first answer waits for the child to start)
        answer = tracer.ask({"op": "nonsense"}, 60)
        assert answer is not None
        assert answer["error"] == "unknown question 'nonsense'"
        assert tracer.traced(wait=0) == []  # and it goes on answering
    finally:
        tracer.close()
