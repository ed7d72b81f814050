"""The API process's trace cache (`service.submit.Traces`) is bounded by the bytes of the
weights it keeps, not only by its count: a full-size upload (a 517 MB VGG-11-BN) stays in
memory while it is the newest, and older networks make way once the total passes the bound."""

from __future__ import annotations

from torch import nn

from service.submit import Traces, weight_bytes

SHAPE = (3, 8, 8)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def fill(traces: Traces, keys: str) -> None:
    for key in keys:
        with traces.use(key, lambda: (small_net(), SHAPE, {"output": (10,)}), wait=60) as entry:
            assert entry is not None  # traced within the wait
            assert entry.net is not None  # built and traced, not failed
            assert entry.trace is not None


def test_older_networks_make_way_when_the_weights_pass_the_byte_bound() -> None:
    one = weight_bytes(small_net())
    assert one == 4 * (3 * 32 * 9 + 32 + 32 * 10 + 10)
    traces = Traces(entries=8, max_bytes=2 * one)
    fill(traces, "abc")
    assert traces.keys() == ["b", "c"]
    roomy = Traces(entries=8, max_bytes=3 * one)
    fill(roomy, "abc")
    assert roomy.keys() == ["a", "b", "c"]


def test_the_newest_network_is_kept_whatever_its_size() -> None:
    traces = Traces(entries=8, max_bytes=1)
    fill(traces, "ab")
    assert traces.keys() == ["b"]
