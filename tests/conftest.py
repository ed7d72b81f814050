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
