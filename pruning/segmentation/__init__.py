"""Semantic segmentation: per-pixel class masks instead of one label per image.

- `scenes`: the built-in synthetic set (coloured disks, squares and triangles on a textured
  background), generated in code from a seed, so tests and benchmarks need no download;
- `folder`: a mask folder on disk (`images/` and `masks/` with matching stems, optional
  `train/` `val/` `test/` splits and `classes.txt`), indexed and checked;
- `transforms`: image and mask augmented together (flip, scale-crop; nearest for masks);
- `sets`: the `(image, mask)` data set both sources are read through;
- `metrics`: the per-pixel loss and the scores (mIoU, pixel accuracy, per-class IoU).

Masks hold the class index per pixel; `IGNORE` (255) marks pixels no loss or score counts."""

from __future__ import annotations

IGNORE = 255
"""The mask value of a pixel that neither the loss nor the scores count."""
