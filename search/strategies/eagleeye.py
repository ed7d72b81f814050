"""EagleEye (Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient Neural Network
Pruning", ECCV 2020): sample many random pruning policies that meet the target, score each
with adaptive BN (BN statistics re-estimated on training batches, then validation), fine-tune
the top k briefly and return the best after fine-tuning.

Simplification: the paper rejects random rate vectors whose FLOPs fall outside a band under
the constraint; we draw a random direction per sample and scale it by bisection onto the
budget, so every sample is used and lies just under the target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import Count, Fraction, LearningRate, Proposal, Result, Steps
from ..registry import register_strategy
from ..space import SearchSpace, bisect_scalar
from .common import SpaceStrategy


@register_strategy("eagleeye")
class EagleEyeStrategy(SpaceStrategy):
    """Phase "sample": `n_samples` random feasible policies scored by the job's evaluator
    (adaptive BN by default); phase "finetune": the best `top_k` fine-tuned for
    `finetune_steps` iterations (the `finetune` evaluator); best = highest fine-tuned score."""

    name = "eagleeye"
    default_evaluator = "adaptive-bn"

    @classmethod
    def without_selection(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """No top-k fine-tunes: the caller picks among the sampled candidates itself."""
        return {**options, "top_k": 0}

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        n_samples: Count = 50,
        top_k: Steps = 3,
        finetune_steps: Steps = 100,
        finetune_lr: LearningRate = 0.01,
        tolerance: Fraction = 0.01,
    ) -> None:
        super().__init__(space, seed)
        self.n_samples, self.top_k = int(n_samples), int(top_k)
        self.finetune_steps, self.finetune_lr, self.tolerance = (
            int(finetune_steps),
            float(finetune_lr),
            float(tolerance),
        )
        self.sampled = 0
        self.finetune_queue: list[int] | None = None
        self.samples: list[Result] = []
        self.finetuned: list[Result] = []

    def random_policy(self) -> dict[str, float]:
        """A random direction in the bounds, scaled so the network just fits the budget."""
        u = {k: float(self.rng.uniform(0.02, 1.0)) for k in self.space.keys}

        def at(alpha: float) -> dict[str, float]:
            return self.space.clip(
                {k: lo_hi[0] + min(1.0, alpha * u[k]) * (lo_hi[1] - lo_hi[0]) for k, lo_hi in self.space.bounds.items()}
            )

        _, policy = bisect_scalar(self.space, at, 0.0, 1.0 / min(u.values()), iters=25, tol=self.tolerance)
        return policy

    def ask(self, n: int = 1) -> list[Proposal]:
        out = self._reissued(n)
        while self.sampled < self.n_samples and len(out) < n:
            self.sampled += 1
            out.append(self._propose(self.random_policy(), "sample"))
        if out or self.sampled < self.n_samples or any(p.phase == "sample" for p in self.outstanding.values()):
            return out
        if self.finetune_queue is None:
            ranked = sorted(self.samples, key=lambda r: (-r.score, r.proposal_id))[: self.top_k]
            self.finetune_queue = [r.proposal_id for r in ranked]
        by_id = {r.proposal_id: r for r in self.samples}
        while self.finetune_queue and len(out) < n:
            src = by_id[self.finetune_queue.pop(0)]
            out.append(
                self._propose(
                    src.policy,
                    "finetune",
                    evaluator="finetune",
                    evaluator_options={"steps": self.finetune_steps, "lr": self.finetune_lr},
                    source=src.proposal_id,
                    adaptive_bn_score=src.score,
                )
            )
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            self._absorb(r)

    def _absorb(self, r: Result) -> None:
        (self.finetuned if r.phase == "finetune" else self.samples).append(r)

    @property
    def done(self) -> bool:
        return (
            self.sampled >= self.n_samples
            and self.finetune_queue is not None
            and not self.finetune_queue
            and not self.outstanding
        )

    @property
    def best(self) -> Result | None:
        return self._best_of(self.finetuned) or self._best_of(self.samples)

    def progress(self) -> dict[str, Any]:
        total = self.n_samples + self.top_k
        done = len(self.samples) + len(self.finetuned)
        phase = (
            f"EagleEye: sampled {len(self.samples)}/{self.n_samples}"
            if self.finetune_queue is None
            else f"EagleEye: fine-tuned {len(self.finetuned)}/{min(self.top_k, len(self.samples))}"
        )
        return {"fraction": min(1.0, done / max(1, total)), "phase": phase}

    def _extra_state(self) -> dict[str, Any]:
        # samples and fine-tunes come back from the record; the queue holds at most top_k ids
        return {"sampled": self.sampled, "finetune_queue": self.finetune_queue}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.sampled = int(state["sampled"])
        q = state["finetune_queue"]
        self.finetune_queue = None if q is None else [int(i) for i in q]
        self.samples, self.finetuned = [], []
        for r in self.history:
            self._absorb(r)
