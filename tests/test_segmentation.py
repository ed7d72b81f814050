"""Semantic segmentation in the engine: the built-in scenes, image and mask augmented together,
the loss and scores on known tensors, the mask-folder reader and the zoo's segmenters cut
through the channel-dependency graph with their outputs verified."""

from __future__ import annotations

import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pruning import build_model, channel_groups, prune
from pruning.cost import trace
from pruning.data import load_dataset, make_loader
from pruning.errors import PinnedGroupWarning, PruningError
from pruning.measure import count_flops, count_params
from pruning.segmentation import IGNORE
from pruning.segmentation.folder import check_pair, maskfolder_shape, scan_maskfolder
from pruning.segmentation.metrics import SegmentationScores, segmentation_loss
from pruning.segmentation.scenes import SCENE_CLASSES, make_scenes, write_scenes_archive
from pruning.segmentation.transforms import eval_pair, train_pair

SEGMENTERS = ["unet", "deeplabv3"]


def test_scenes_are_seeded_and_hold_every_class() -> None:
    a_img, a_mask = make_scenes(64, 32, seed=3)
    b_img, b_mask = make_scenes(64, 32, seed=3)
    c_img, _ = make_scenes(64, 32, seed=4)
    assert torch.equal(a_img, b_img)
    assert torch.equal(a_mask, b_mask)
    assert not torch.equal(a_img, c_img)
    assert a_img.shape == (64, 3, 32, 32)
    assert a_mask.shape == (64, 32, 32)
    assert set(a_mask.unique().tolist()) == {*range(len(SCENE_CLASSES)), IGNORE}
    # the ignore band is an outline, not the bulk of the image
    assert 0.02 < float((a_mask == IGNORE).float().mean()) < 0.2


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    """The mask is painted into the image's first channel as its class index; after any random
    scale-crop-flip, every pixel the mask labels must still carry its own index (nearest for
    the mask, bilinear for the image: compared where the mask's 3x3 neighbourhood is uniform,
    so interpolation cannot blend two labels)."""
    size = 24
    blocks = torch.randint(0, 4, (37, 29), dtype=torch.uint8)
    blocks[:, :14] = torch.where(blocks[:, :14] == 3, 0, blocks[:, :14])  # class 3 only on the right
    # labels in 8 x 8 blocks: a 3 x 3 output window spans at most ~4 input pixels at the
    # smallest scale, so no third label can hide inside a window that looks uniform
    mask = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)
    x = torch.stack([mask.float() / 3, torch.rand(mask.shape), torch.rand(mask.shape)])
    sides = set()
    padded = False
    for seed in range(40):
        torch.manual_seed(seed)
        xa, ma = train_pair(x, mask, size * 4)
        assert xa.shape == (3, size * 4, size * 4)
        assert ma.shape == (size * 4, size * 4)
        labelled = ma != IGNORE
        padded |= bool((~labelled).any())
        m = ma.long()
        pad = torch.nn.functional.pad(m[None, None].float(), (1, 1, 1, 1), value=-1.0)[0, 0]  # the edge: unknown
        windows = pad.unfold(0, 3, 1).unfold(1, 3, 1)
        uniform = (windows == m[..., None, None]).all(-1).all(-1) & labelled
        assert uniform.sum() > 500
        torch.testing.assert_close(xa[0][uniform] * 3, m[uniform].float(), atol=1e-4, rtol=0)
        cols = (m == 3).any(0).nonzero()
        if len(cols) and len(cols) < m.shape[1]:
            sides.add("right" if float(cols.float().mean()) > m.shape[1] / 2 else "left")
    assert sides == {"left", "right"}  # flipped in some draws, not in others
    assert padded  # a scale below the input size pads the mask with IGNORE
    xe, me = eval_pair(x, mask, size)
    assert xe.shape == (3, size, size)
    assert me.dtype == torch.uint8
    assert set(me.unique().tolist()) <= {0, 1, 2, 3}


def test_loss_ignores_marked_pixels_and_resizes_low_resolution_logits() -> None:
    mask = torch.tensor([[[0, 1], [IGNORE, 1]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, 0] = 5.0  # right
    logits[0, 0, 1, 1] = 5.0  # wrong (class 1)
    logits[0, 1, 1, 0] = 100.0  # on an ignored pixel: must not count
    ce = torch.nn.functional.cross_entropy
    expected = (
        ce(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
        + ce(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
        + ce(torch.tensor([[5.0, 0.0]]), torch.tensor([1]))
    ) / 3
    torch.testing.assert_close(segmentation_loss(logits, mask), expected)
    # logits at half the mask's resolution are upsampled, not refused
    low = torch.randn(2, 3, 4, 4)
    full = torch.randint(0, 3, (2, 8, 8))
    up = torch.nn.functional.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(segmentation_loss(low, full), ce(up, full))


def test_scores_on_a_hand_made_case() -> None:
    """Ground truth and prediction of 8 pixels over 4 classes, one pixel ignored:
    class 0: tp 1, union 3 -> 1/3; class 1: tp 2, union 4 -> 1/2; class 2: tp 2, union 2 -> 1;
    class 3 predicted only on the ignored pixel, so absent (no IoU, not in the mean):
    mIoU = (1/3 + 1/2 + 1) / 3; pixel accuracy: 5 right of the 7 counted."""
    target = torch.tensor([[[0, 1, 1, 1], [2, 2, IGNORE, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 1]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    scores = SegmentationScores(4)
    scores.update(logits[:, :, :1], target[:, :1])  # two batches add up like one
    scores.update(logits[:, :, 1:], target[:, 1:])
    out = scores.compute()
    assert out["per_class_iou"][:3] == pytest.approx([1 / 3, 1 / 2, 1.0])
    assert out["per_class_iou"][3] is None
    assert out["miou"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert out["pixel_accuracy"] == pytest.approx(5 / 7)


def _save(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _flat_folder(root: Path, n: int = 12, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(root / "images" / f"{i:03d}.jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
        _save(root / "masks" / f"{i:03d}.png", rng.integers(0, 3, (size, size), dtype=np.uint8), "L")


def test_maskfolder_reads_pairs_splits_and_counts_classes(tmp_path: Path) -> None:
    _flat_folder(tmp_path / "flat")
    index = scan_maskfolder(tmp_path / "flat")
    assert index.layout == "flat"
    assert len(index.train) == 12
    assert index.classes is None
    assert maskfolder_shape(tmp_path / "flat") == (3, 3)  # indices 0..2 found in the masks
    splits = load_dataset("maskfolder", input_size=16, path=tmp_path / "flat")
    assert splits.num_classes == 3
    assert splits.classes == ["0", "1", "2"]
    x, m = splits.val[0]
    assert x.shape == (3, 16, 16)
    assert m.shape == (16, 16)
    assert m.dtype == torch.long
    _save(tmp_path / "odd" / "images" / "a.png", np.zeros((20, 20, 3), np.uint8), "RGB")
    _save(tmp_path / "odd" / "masks" / "a.png", np.zeros((10, 20), np.uint8), "L")
    pair = scan_maskfolder(tmp_path / "odd").train[0]
    with pytest.raises(PruningError, match=r"mask a\.png is 20 x 10 pixels, its image a\.png 20 x 20"):
        check_pair(pair, None)


def test_scenes_archive_is_a_split_maskfolder(tmp_path: Path) -> None:
    archive = write_scenes_archive(tmp_path / "scenes.tar.gz", {"train": 6, "val": 3, "test": 2}, size=16)
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "out", filter="data")
    index = scan_maskfolder(tmp_path / "out" / "scenes")
    assert index.layout == "split"
    assert index.classes == list(SCENE_CLASSES)
    assert (len(index.train), len(index.val or []), len(index.test or [])) == (6, 3, 2)
    assert all(check_pair(p, len(SCENE_CLASSES)) <= 3 for p in index.pairs())


def test_builtin_scenes_load_as_datasplits() -> None:
    splits = load_dataset("scenes", input_size=32, seed=0, subset=40)
    assert splits.num_classes == 4
    assert splits.in_channels == 3
    assert splits.classes == list(SCENE_CLASSES)
    xb, mb = next(iter(make_loader(splits.train, batch_size=8, shuffle=True)))
    assert xb.shape == (8, 3, 32, 32)
    assert mb.shape == (8, 32, 32)
    assert mb.dtype == torch.long
    assert abs(float(xb.mean())) < 0.5  # standardised


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_cut_removes_exactly_the_zeroed_channels(name: str) -> None:
    """Channels zeroed in every layer of their group (through the U-Net's concatenated skips and
    the ASPP's concatenated branches) are cut, and the cut network's logits equal the whole one's."""
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = build_model(name, num_classes=4, width=0.25).eval()
    _randomise_bn(model)
    modules = dict(model.named_modules())
    kept = {}
    groups = channel_groups(model, shape)
    assert groups
    assert all(g.pinned is None for g in groups)
    for g in groups:
        k = min(2, g.channels - 1)
        for member in g.members:
            m = modules[member]
            m.weight.data[:k] = 0
            if m.bias is not None:
                m.bias.data[:k] = 0
        for bn_name in g.bns:
            bn = modules[bn_name]
            bn.weight.data[:k] = 0
            bn.bias.data[:k] = 0
            bn.running_mean[:k] = 0
        kept[g.key] = g.channels - k
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PinnedGroupWarning)
        cut = prune(model, kept, "l1", input_shape=shape)
    with torch.no_grad():
        after = cut(x)
    assert before.shape == (2, 4, 32, 32)
    assert count_params(cut) < count_params(model)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_cost_model_is_exact_and_halves(name: str) -> None:
    shape = (3, 32, 32)
    model = build_model(name, num_classes=4, width=0.25).eval()
    graph, cost = trace(model, shape)
    assert cost.exact
    f0 = count_flops(model, shape)
    cut = prune(model, 0.5, "l1", input_shape=shape)
    assert cut(torch.randn(1, *shape)).shape == (1, 4, 32, 32)
    assert count_flops(cut, shape) < 0.4 * f0
    kept = {g.key: max(1, g.channels // 2) for g in graph.groups}
    assert cost.flops(kept) == count_flops(prune(model, kept, "l1", input_shape=shape), shape)


def test_the_segmentation_task_scores_miou_with_extras_and_trains_on_masks() -> None:
    """Through the task registry, as the training loops and evaluators call it: a constant
    all-background network scores background's IoU over the classes present, the loss is the
    ignore-aware per-pixel cross-entropy, and distillation is averaged per pixel."""
    from torch.utils.data import TensorDataset

    from pruning.tasks import make_task
    from pruning.train import evaluate_score, task_loss

    task = make_task("segmentation")
    assert (task.name, task.score_name) == ("segmentation", "miou")
    masks = torch.zeros(4, 8, 8, dtype=torch.long)
    masks[:, :4] = 1  # top half class 1, bottom half background
    masks[:, 0, 0] = IGNORE
    data = TensorDataset(torch.randn(4, 3, 8, 8), masks)
    score = evaluate_score(_Constant(4), data, task=task)
    counted = 4 * 63
    background = 4 * 32
    assert score.name == "miou"
    assert score.value == pytest.approx((background / counted) / 2)  # class 0's IoU; class 1's is 0
    assert score.extras["pixel_accuracy"] == pytest.approx(background / counted)
    assert score.extras["iou_1"] == 0.0
    assert "iou_2" not in score.extras  # absent from both: no IoU
    # the report names them by class, leaving out a class with no figure
    classes = ["sky", "road", "car", "person"]
    assert task.class_scores(score.extras, classes) == {"iou": {"sky": score.extras["iou_0"], "road": 0.0}}
    assert task.class_scores(score.extras, []) == {}
    net = _Constant(4)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(task_loss(net, x, masks, task=task), segmentation_loss(net(x), masks))
    student, teacher = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    kd = task.kd_loss(student, teacher, 4.0)
    assert float(kd) > 0
    assert float(task.kd_loss(student, student, 4.0)) == pytest.approx(0.0, abs=1e-6)
    # per pixel: the same maps at twice the resolution (each pixel four times) weigh the same
    bigger = task.kd_loss(
        student.repeat_interleave(2, -1).repeat_interleave(2, -2),
        teacher.repeat_interleave(2, -1).repeat_interleave(2, -2),
        4.0,
    )
    torch.testing.assert_close(bigger, kd)


class _Constant(torch.nn.Module):
    """Predicts class 0 (background) everywhere."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.k, *x.shape[-2:]) + 0 * self.p
        out[:, 0] = 1
        return out
