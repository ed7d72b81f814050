"""The final fine-tune repeats bit for bit: the same network, data, settings and thread count
give the same weights in two fresh processes, whatever ran before it in the process (another
fine-tune with another seed), and another seed gives other weights (the check is not vacuous)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import copy, hashlib, sys, torch
from pruning.data import load_dataset
from pruning.models import build_model
from pruning.train import FinetuneConfig, finetune, make_reproducible

seed, warm = int(sys.argv[1]), sys.argv[2] == "warm"
make_reproducible(0, 1)
data = load_dataset("digits", input_size=16, seed=0)
model = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
if warm:  # other work in the process first: another fine-tune, another seed
    finetune(copy.deepcopy(model), data, FinetuneConfig(epochs=0.5, seed=7), device="cpu")
finetune(model, data, FinetuneConfig(epochs=1, eval_every=5, seed=seed), device="cpu")
digest = hashlib.sha256()
for value in model.state_dict().values():
    digest.update(value.detach().cpu().numpy().tobytes())
print(digest.hexdigest())
"""


def weights_digest(seed: int, warm: bool) -> str:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seed), "warm" if warm else "cold"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split()[-1]


def test_two_fine_tunes_of_the_same_inputs_give_identical_weights() -> None:
    first = weights_digest(0, warm=False)
    assert weights_digest(0, warm=True) == first
    assert weights_digest(1, warm=False) != first
