"""Device choice: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


def get_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks CUDA if available; `cpu` or `cuda[:N]` force one; a `torch.device` is kept."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
