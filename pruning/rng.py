"""Random draws kept off the process's seeded stream. torch's CPU generator is one per process:
a background thread that builds a network (its initial weights are drawn) would otherwise move
the stream under a seeded run in another thread, and that run would no longer repeat."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# torch's functions and tensor methods that draw from a generator (`generator=` keyword); nn.init
# and module constructors draw through the tensor methods.
_DRAWS: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
        torch.normal,
        torch.bernoulli,
        torch.multinomial,
        torch.Tensor.uniform_,
        torch.Tensor.normal_,
        torch.Tensor.random_,
        torch.Tensor.bernoulli_,
        torch.Tensor.exponential_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.Tensor.geometric_,
    }
)


@functools.cache
def _takes_generator(func: Callable[..., Any]) -> bool:
    """Whether `func` draws: one of `_DRAWS`, or a Python function with a `generator` argument
    (nn.init's; torch hands the whole call to the mode, and the draws inside it would pass by)."""
    if func in _DRAWS:
        return True
    try:
        return "generator" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


class _PrivateDraws(TorchFunctionMode):
    """Hands `generator` to every draw that names none. A mode is active in its own thread only
    (torch keeps the mode stack per thread), so other threads keep drawing from the process's."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is None and _takes_generator(func):
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)


@contextmanager
def private_draws(seed: int = 0) -> Iterator[torch.Generator]:
    """Inside the block, this thread's random draws (initial weights, random inputs) come from a
    generator of its own seeded with `seed`: the process's stream is neither read nor moved."""
    generator = torch.Generator().manual_seed(seed)
    with _PrivateDraws(generator):
        yield generator
