"""Object detection: box targets, data sets with boxes, decoding, NMS, losses and mAP.

A sample's target is a float tensor `(M, 5)`, one row `[class, x1, y1, x2, y2]` per object,
boxes in pixels of the network's (square, resized) input; rows whose class is `PAD` are padding.
`M` is fixed per data set (the most objects of any image, at least 1), so the default collate
stacks a batch's targets to `(N, M, 5)` and every loader, calibration draw and task reads them
like any other label tensor."""

from __future__ import annotations

import torch

PAD = -1.0
"""The class of a padding row in a target."""


def valid(target: torch.Tensor) -> torch.Tensor:
    """Which rows of a target `(..., M, 5)` are objects (not padding): a bool `(..., M)`."""
    return target[..., 0] != PAD


def pad_targets(rows: list[torch.Tensor], m: int) -> torch.Tensor:
    """Stack per-image object rows `(k_i, 5)` into `(len(rows), m, 5)`, padding with `PAD`."""
    out = torch.full((len(rows), m, 5), PAD)
    for i, r in enumerate(rows):
        if len(r) > m:
            raise ValueError(f"an image has {len(r)} objects, more than the {m} rows of its target")
        out[i, : len(r)] = r
    return out
