"""The user network of `make demo-upload` (scripts/demo-upload.sh): a small CNN with a
squeeze-excitation gate, defined here and not in the zoo, trained briefly on digits and
exported with the one-line `torch.export` call the README's intake section shows.

    python scripts/demo_net.py --out digits_net.pt2 [--epochs 20]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


class DigitsNet(nn.Module):
    """A stem, a strided block gated by squeeze-excitation (`view(b, c, 1, 1)`), a classifier."""

    def __init__(self, classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32))
        self.gate = nn.Linear(32, 32)
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.block(self.stem(x)))
        b, c = x.shape[:2]
        g = torch.sigmoid(self.gate(x.mean((2, 3)))).view(b, c, 1, 1)
        return self.classifier((x * g).mean((2, 3)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the .pt2 file to write")
    p.add_argument("--epochs", type=float, default=20.0)
    args = p.parse_args()

    from pruning.data import load_dataset
    from pruning.train import TrainConfig, evaluate, train

    data = load_dataset("digits", input_size=16, seed=0)
    model = DigitsNet()
    train(model, data.train, TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, seed=0))
    print(f"DigitsNet trained on digits: test accuracy {evaluate(model, data.test):.3f}")
    x = torch.randn(2, 1, 16, 16)
    # the one-line export (a dynamic batch dimension; see the README's "Your own network")
    torch.export.save(
        torch.export.export(model.eval(), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), args.out
    )
    print(f"exported {args.out}")


if __name__ == "__main__":
    main()
