"""Evaluation and a whole job on a CUDA device (run on the GPU machine; skipped where there is
no CUDA, as on the 2-core CI machine): the same code path as on the CPU, with the candidate's
score equal to the CPU's up to floating-point differences, and a job's outputs loadable on the
CPU."""

from __future__ import annotations

import pytest
import torch

from pruning.data import calibration_batches
from pruning.models import build_model
from search.evaluators import EvalContext, make_evaluator
from search.space import SearchSpace

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU machine)")


@cuda
def test_adaptive_bn_score_on_cuda_matches_the_cpu(digits):
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, input_size=16).eval()
    calib = calibration_batches(digits.train, 2, 32, 0)
    policy = None
    scores = {}
    for device in ("cpu", "cuda"):
        m = build_model("convnet", num_classes=10, in_channels=1, input_size=16)
        m.load_state_dict(model.state_dict())
        m = m.to(device).eval()
        space = SearchSpace(m, (1, 16, 16), {"flops": 0.5}, calibration=calib)
        policy = policy or dict.fromkeys(space.keys, 0.4)
        ctx = EvalContext(model=m, data=digits, input_shape=(1, 16, 16), calibration=calib, space=space, device=device)
        result = make_evaluator("adaptive-bn", ctx).evaluate(policy)
        scores[device] = result.score
        assert result.flops > 0
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=3 / 359)  # within one image or so


@cuda
def test_a_job_runs_on_cuda_and_its_model_loads_on_the_cpu(tmp_path):
    from pruning.export import load_model
    from workers.pipeline import run_pipeline

    summary = run_pipeline(
        {
            "model": {"zoo": "convnet"},
            "data": {"name": "digits", "input_size": 16},
            "target": {"flops": 0.5},
            "strategy": {"name": "uniform"},
            "train": {"epochs": 1},
            "finetune": {"max_steps": 20},
        },
        tmp_path,
        device="cuda",
    )
    assert summary["status"] == "done", summary
    model = load_model(tmp_path)
    out = model.cpu().eval()(torch.zeros(2, 1, 16, 16))
    assert out.shape == (2, 10)
