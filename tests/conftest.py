"""Shared fixtures: small models and the digits data, kept cheap for 2-core CI."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def digits():
    """The digits data at 16x16, split once per test session."""
    from pruning.data import load_dataset

    return load_dataset("digits", input_size=16, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (opt in with `pytest.mark.usefixtures`):
    on a shared, busy 2-core machine it runs small CPU models several times faster than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
