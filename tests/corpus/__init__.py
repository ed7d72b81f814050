"""A corpus of small networks that follow the standard CNN families (written here by hand:
torchvision cannot be installed next to the CPU torch), for checking that the engine cuts
each correctly: 3x32x32 inputs, 10 outputs, few channels so that a cut and a forward take
milliseconds on a CPU. `CORPUS` maps a name to its family and factory; `build(name)` makes one
in eval mode with seeded weights and non-trivial BN statistics. `FULL_SIZE` holds three of
torchvision's networks at full size and 224 px (`fullsize.py`), for intake and the REST path.
`DETECTORS` holds two detectors written as Ultralytics and torchvision write them
(`detectors.py`: a YOLOv8 and an FCOS), 3x64x64, three classes."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pruning.cut import example_input
from pruning.export import export_program
from pruning.graph import DependencyGraph
from pruning.tasks import named_outputs
from search.base import Result
from search.evaluators import EvalContext, Evaluator
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace

from .classic import VGG, AlexNet, DenseNet, GoogLeNet, Res2Net, ResNet, SqueezeNet, WideResNet, Xception
from .dense import FPN, TorchvisionDeepLabV3, UNet
from .detectors import FCOS, DetectionModel
from .fullsize import TorchvisionAlexNet, TorchvisionVGG, TorchvisionWideResNet
from .heads import AuxHeadNet
from .mobile import (
    ConvNeXt,
    CSPNet,
    EfficientNet,
    GhostNet,
    MobileNetV1,
    MobileNetV2,
    MobileNetV3,
    RegNet,
    ShuffleNetV2,
    TorchvisionShuffleNetV2,
)

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
LIMITED_TARGET = 0.7


@dataclass(frozen=True)
class Entry:
    """One corpus network: its family (the README table's first column), a factory and, for a
    network whose groups that cannot be cut hold too many FLOPs for half of them to go, why
    (`limit`: a search then targets `LIMITED_TARGET` of the FLOPs instead). `classifier`:
    one score per class (False: per-pixel scores or detections, which the service's
    classification data sets do not fit). `input_shape`: what it takes, (C, H, W)."""

    family: str
    factory: Callable[..., nn.Module]
    limit: str | None = None
    classifier: bool = True
    input_shape: tuple[int, int, int] = INPUT_SHAPE


CORPUS: dict[str, Entry] = {
    "vgg11_bn": Entry("VGG", VGG),
    "alexnet": Entry("AlexNet", AlexNet),
    "resnet_basic": Entry("ResNet (basic)", lambda: ResNet("basic")),
    "resnet_bottleneck": Entry("ResNet (bottleneck)", lambda: ResNet("bottleneck", widths=(4, 8, 16))),
    "se_resnet": Entry("SE-ResNet", lambda: ResNet("basic", se=True)),
    "resnext": Entry("ResNeXt (grouped)", lambda: ResNet("bottleneck", widths=(4, 8, 16), groups=4, width_per_group=4)),
    "wide_resnet": Entry("Wide ResNet", WideResNet),
    "res2net": Entry(
        "Res2Net (split)",
        Res2Net,
        "torch.split by a width written in the code, and each part added to the previous part's conv "
        "output: the block's inner channels are pinned",
    ),
    "densenet": Entry("DenseNet (cascaded concat)", DenseNet),
    "googlenet": Entry("GoogLeNet / Inception", GoogLeNet),
    "squeezenet": Entry("SqueezeNet (fire)", SqueezeNet),
    "xception": Entry("Xception", Xception),
    "mobilenet_v1": Entry("MobileNetV1", MobileNetV1),
    "mobilenet_v2": Entry("MobileNetV2", MobileNetV2),
    "mobilenet_v3": Entry("MobileNetV3 (SE, hard-swish)", MobileNetV3),
    "efficientnet": Entry("EfficientNet (MBConv + SE)", EfficientNet),
    "regnetx_gw8": Entry("RegNetX (group width 8)", lambda: RegNet(group_width=8)),
    "regnety_gw16": Entry("RegNetY (group width 16, SE)", lambda: RegNet(group_width=16, se=True)),
    "shufflenet_v2": Entry("ShuffleNetV2 (channel shuffle)", ShuffleNetV2),
    "shufflenet_v2_tv": Entry("ShuffleNetV2 (torchvision's code: view(b, -1, h, w))", TorchvisionShuffleNetV2),
    "ghostnet": Entry(
        "GhostNet (concat + slice)",
        GhostNet,
        "each ghost module concatenates a conv's output with its depthwise copy, coupling channel i "
        "with channel i + n: those groups are pinned",
    ),
    "cspnet": Entry("CSPNet", CSPNet),
    "convnext": Entry("ConvNeXt (7x7 dw, LayerNorm, layer scale)", ConvNeXt),
    "unet": Entry("U-Net (skip concat, transposed conv)", UNet, classifier=False),
    "fpn": Entry("FPN (top-down add)", FPN),
    "deeplabv3_tv": Entry(
        "DeepLabV3 (torchvision's code: ASPP with image pooling, FCN aux head, dict output at input size)",
        TorchvisionDeepLabV3,
        classifier=False,
    ),
    "aux_heads": Entry("Auxiliary head (dict output: out, aux)", AuxHeadNet),
}


FULL_SIZE_INPUT = (3, 224, 224)
FULL_SIZE: dict[str, Entry] = {
    "tv_vgg11_bn": Entry("VGG-11-BN (torchvision's, 224 px)", TorchvisionVGG),
    "tv_alexnet": Entry("AlexNet (torchvision's, 224 px)", TorchvisionAlexNet),
    "tv_wide_resnet50_2": Entry("Wide ResNet-50-2 (torchvision's, 224 px)", TorchvisionWideResNet),
}
"""Full-size networks as torchvision writes them, for `FULL_SIZE_INPUT` (not in `CORPUS`: each
is hundreds of MB and seconds per forward, too much for the per-network tests)."""

DETECTION_INPUT = (3, 64, 64)
DETECTORS: dict[str, Entry] = {
    "yolov8": Entry(
        "YOLOv8 (Ultralytics' code: C2f chunk/split, SPPF, Concat, Detect + DFL; (N, 4+K, A) output)",
        lambda: DetectionModel(nc=3, width=0.125, prior=False),
        classifier=False,
        input_shape=DETECTION_INPUT,
    ),
    "fcos": Entry(
        "FCOS (torchvision's code: ResNet body, FPN + P6/P7, head shared by the levels; dict output)",
        lambda: FCOS(num_classes=3),
        classifier=False,
        input_shape=DETECTION_INPUT,
    ),
}
"""Detectors at `DETECTION_INPUT` (three levels at strides 8, 16 and 32, FCOS's P6 and P7
besides), tiny widths; not in `CORPUS`, whose tests search for half the FLOPs at 32 px
(tests/test_corpus_detectors.py takes them through the same path)."""


def entry(name: str) -> Entry:
    """The corpus entry `name`, from `CORPUS`, `FULL_SIZE` or `DETECTORS`."""
    return CORPUS.get(name) or FULL_SIZE.get(name) or DETECTORS[name]


def build(name: str, seed: int = 0, **kwargs: int) -> nn.Module:
    """Corpus network `name` (from `CORPUS`, `FULL_SIZE` or `DETECTORS`; `kwargs` go to its factory) in eval
    mode: seeded weights, BN statistics drawn away from the identity so a wrong channel mapping
    shows in the output."""
    torch.manual_seed(seed)
    model = entry(name).factory(**kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None
            assert m.running_var is not None
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def exported(name: str, folder: Path) -> Path:
    """`build(name)` exported to `.pt2` (`pruning.export.export_program`, a dynamic batch, its
    entry's input shape) in
    `folder`, once: a later call, from any test process, gets the same file (written under a
    temporary name and renamed, so a reader never sees half a file)."""
    path = folder / f"{name}.pt2"
    if not path.is_file():
        tmp = export_program(build(name), folder / f"{name}.{os.getpid()}.tmp.pt2", entry(name).input_shape)
        os.replace(tmp, path)
    return path


def target(name: str) -> float:
    """The FLOPs fraction the corpus asks of a network: half, or `LIMITED_TARGET` for one whose
    pinned groups hold too many FLOPs."""
    return 0.5 if CORPUS[name].limit is None else LIMITED_TARGET


def without_channels(model: nn.Module, removed: Mapping[str, list[int]], input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of `model` in which each consumer's input columns for the `removed` channels of
    each group are zero: what the network computes once those channels are gone (a cut is
    checked against it)."""
    ref = copy.deepcopy(model)
    graph = DependencyGraph(ref, example_input(ref, input_shape))
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for key, idxs in removed.items():
            for name, cols in graph.consumer_inputs(key, idxs).items():
                layer = modules[name]
                transposed = isinstance(layer, nn.ConvTranspose2d)
                weight = layer.weight
                assert isinstance(weight, torch.Tensor)
                if transposed:
                    weight[cols] = 0
                else:
                    weight[:, cols] = 0
    return ref


class ForwardCheck(Evaluator):
    """Scores 1 when the cut network runs on a random batch, keeps the original's output shape
    and gives finite values, else 0: a search over the corpus needs no data set."""

    name = "forward-check"

    def score(self, model: nn.Module, policy: Mapping[str, float], phase: str) -> float:
        with torch.no_grad():
            out = model(torch.randn(2, *self.context.input_shape))
        return float(shapes(out) == self.context.extras["shape"] and finite(out))


def shapes(out: object) -> dict[str, tuple[int, ...]]:
    """Each output's shape by name (a network with one output: `{"output": shape}`)."""
    return {k: tuple(v.shape) for k, v in named_outputs(out).items()}


def finite(out: object) -> bool:
    """Whether every output is finite."""
    return all(bool(torch.isfinite(v).all()) for v in named_outputs(out).values())


def search_cut(model: nn.Module, space: SearchSpace, strategy: str) -> tuple[Result, nn.Module]:
    """Run `strategy` (e.g. uniform, global) over `space` in process (`search.runner`), scored
    by `ForwardCheck`; returns its chosen result and that network, cut (`space.cut`)."""
    with torch.no_grad():
        shape = shapes(model(torch.randn(2, *space.input_shape)))
    ctx = EvalContext(model=model, data=None, input_shape=space.input_shape, space=space, extras={"shape": shape})  # type: ignore[arg-type]
    best = run_search(make_strategy(strategy, space, seed=0), ForwardCheck(ctx)).best
    if best is None:
        raise RuntimeError(f"strategy {strategy} returned no result")
    return best, space.cut(best.policy).eval()
