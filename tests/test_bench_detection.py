"""The detection benchmark's rebuild of a returned detector as an eager module (for timing it at
other input sizes): remade in the shapes of a saved state, it gives that network's outputs."""

from __future__ import annotations

import torch

from bench.detection import MODEL, shaped_like
from pruning.models import build_model


def test_a_detector_remade_in_a_narrower_states_shapes_gives_that_networks_outputs():
    torch.manual_seed(0)
    narrow = build_model(MODEL, num_classes=3, in_channels=3, width=0.25).eval()
    remade = shaped_like(build_model(MODEL, num_classes=3, in_channels=3, width=0.5), narrow.state_dict())
    assert sum(p.numel() for p in remade.parameters()) == sum(p.numel() for p in narrow.parameters())
    for size in (64, 96):  # any input size, not only the one it was saved at
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(remade(x), narrow(x), atol=1e-5)
