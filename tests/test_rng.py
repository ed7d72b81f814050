"""Draws kept off the process's seeded stream: a network built on the service's trace thread
does not move the stream of a seeded run in another thread (a run would otherwise not repeat)."""

from __future__ import annotations

import threading

import torch

from pruning.models import build_model
from pruning.rng import private_draws
from service.submit import Traces


def test_a_build_inside_draws_nothing_from_the_process_stream() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with private_draws(7):
        a = build_model("convnet")
        x = torch.randn(3)
    assert torch.equal(torch.get_rng_state(), before)
    with private_draws(7):
        b = build_model("convnet")
        y = torch.randn(3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert torch.equal(x, y)
    # outside the block the process's stream is drawn as before
    build_model("convnet")
    assert not torch.equal(torch.get_rng_state(), before)


def test_the_private_generator_is_this_threads_alone() -> None:
    inside, done = threading.Event(), threading.Event()

    def hold() -> None:
        with private_draws():
            inside.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        before = torch.get_rng_state()
        torch.rand(4)  # this thread is outside the block: it draws from the process's stream
        assert not torch.equal(torch.get_rng_state(), before)
    finally:
        done.set()
        t.join()


def test_a_background_trace_leaves_the_seeded_stream_alone() -> None:
    traces = Traces()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with traces.use(("zoo", "convnet"), lambda: (build_model("convnet"), (1, 16, 16), {"output": (10,)}), 120) as got:
        assert got is not None
        assert got.trace is not None
    assert torch.equal(torch.get_rng_state(), before)
