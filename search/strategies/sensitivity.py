"""Sensitivity analysis (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017;
the AlexNet layer plot of Han et al., "Learning both Weights and Connections", NeurIPS 2015):
prune each layer alone at rates 0.1 … 0.9, record the accuracy drop, then give sensitive
layers smaller rates.

Allocation (our formulation of "sensitive layers keep more"): for a tolerated drop ε every
layer takes the largest rate whose measured drop stays within ε (linearly interpolated
between the analysed rates, made monotone); ε is bisected until the network just fits the
target. Li et al. pick the tolerance by hand and skip sensitive layers; solving for ε makes
it meet any target. Li et al. score the cut layer as it is (`--evaluator plain`); we default
to adaptive BN, since on BN networks the inherited statistics, not the lost filters, dominate
the drop of a plain score."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field

from ..base import Proposal, Rate, Result
from ..registry import register_strategy
from ..space import SearchSpace, bisect_scalar
from .common import SpaceStrategy

DEFAULT_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _listed(value: Any) -> Any:
    """One rate is a list of one."""
    return value if isinstance(value, (list, tuple)) else [value]


@register_strategy("sensitivity")
class SensitivityStrategy(SpaceStrategy):
    """Phase "analyse": the unpruned model plus each searchable group alone at each of
    `rates` (clipped to its bounds); phase "allocate": one policy from the drop table."""

    name = "sensitivity"
    default_evaluator = "adaptive-bn"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        rates: Annotated[Sequence[Rate], BeforeValidator(_listed), Field(min_length=1, max_length=100)] = DEFAULT_RATES,
    ) -> None:
        super().__init__(space, seed)
        self.rates = sorted({float(r) for r in _listed(rates)})
        self.queue: list[tuple[str, float]] = [("", 0.0)] + [(k, r) for k in space.keys for r in self.rates]
        self.total = len(self.queue) + 1
        self.table: dict[str, dict[float, float]] = {}
        self.base_score: float | None = None
        self.allocated = False
        self.final: Result | None = None
        self.epsilon: float | None = None

    # ---- analysis -------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Proposal]:
        out = self._reissued(n)
        while self.queue and len(out) < n:
            key, rate = self.queue.pop(0)
            policy = {key: rate} if key else {}
            out.append(self._propose(policy, "analyse", layer=key, rate=rate))
        if not out and not self.queue and not self.outstanding and not self.allocated:
            self.allocated = True
            policy = self.allocate()
            out.append(self._propose(policy, "allocate", epsilon=self.epsilon))
        return out

    def tell(self, results: list[Result]) -> None:
        for r in self._accept(results):
            self._absorb(r)

    def _absorb(self, r: Result) -> None:
        if r.phase == "allocate":
            self.final = r
        elif not r.meta.get("layer"):
            self.base_score = r.score
        else:
            self.table.setdefault(r.meta["layer"], {})[float(r.meta["rate"])] = r.score

    # ---- allocation -----------------------------------------------------------------------
    def drops(self, key: str) -> tuple[list[float], list[float]]:
        """Rates (0 first, then the analysed ones within bounds) and the monotone accuracy drop at each."""
        base = self.base_score or 0.0
        hi = self.space.bounds[key][1]
        pts = sorted((min(r, hi), base - s) for r, s in self.table.get(key, {}).items())
        rates, drops = [0.0], [0.0]
        for r, d in pts:
            if r > rates[-1]:
                rates.append(r)
                drops.append(max(drops[-1], d))
        if rates[-1] < hi:
            rates.append(hi)
            drops.append(drops[-1] + 1.0)
        return rates, drops

    def _rate_at(self, key: str, eps: float) -> float:
        rates, drops = self.drops(key)
        if eps >= drops[-1]:
            return rates[-1]
        j = int(np.searchsorted(drops, eps, side="right"))
        if j == 0:
            return 0.0
        d0, d1, r0, r1 = drops[j - 1], drops[j], rates[j - 1], rates[j]
        return r0 if d1 <= d0 else r0 + (r1 - r0) * (eps - d0) / (d1 - d0)

    def policy_for(self, eps: float) -> dict[str, float]:
        """Every group at the largest rate whose drop is within `eps`."""
        return self.space.clip({k: self._rate_at(k, eps) for k in self.space.keys})

    def allocate(self) -> dict[str, float]:
        """The smallest tolerated drop ε whose policy fits the target; then, since layers whose
        drop is flat jump to the end of their plateau, every rate is scaled back by one factor
        (bisected) so the network uses the budget instead of falling short of it."""
        top = max(self.drops(k)[1][-1] for k in self.space.keys) + 1.0
        self.epsilon, policy = bisect_scalar(self.space, self.policy_for, 0.0, top, iters=60)
        _, policy = bisect_scalar(
            self.space, lambda t: self.space.clip({k: t * r for k, r in policy.items()}), 0.0, 1.0
        )
        return policy

    # ---- state ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.final is not None and not self.outstanding

    @property
    def best(self) -> Result | None:
        return self.final

    def progress(self) -> dict[str, Any]:
        n = len(self.history)
        phase = "sensitivity: allocating" if self.allocated else f"sensitivity: analysed {n}/{self.total - 1}"
        return {"fraction": min(1.0, n / self.total), "phase": phase}

    def _extra_state(self) -> dict[str, Any]:
        # the plan is fixed at construction: only how far it was asked; the table comes from the record
        return {"asked": self.total - 1 - len(self.queue), "allocated": self.allocated, "epsilon": self.epsilon}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.queue = self.queue[int(state["asked"]) :]
        self.allocated, self.epsilon = bool(state["allocated"]), state["epsilon"]
        self.table, self.base_score, self.final = {}, None, None
        for r in self.history:
            self._absorb(r)

    # ---- artefacts ------------------------------------------------------------------------
    def write_artifacts(self, out_dir: str | Path) -> dict[str, str]:
        """`sensitivity.csv` (layer, rate, score, drop) and `sensitivity.png`, the survey's
        AlexNet-style plot: accuracy against pruning rate, one line per layer."""
        out = Path(out_dir)
        base = self.base_score or 0.0
        with open(out / "sensitivity.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "rate", "score", "drop"])
            for k in self.space.keys:
                for r, s in sorted(self.table.get(k, {}).items()):
                    w.writerow([k, r, s, base - s])
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k in self.space.keys:
            pts = sorted(self.table.get(k, {}).items())
            if pts:
                ax.plot([0.0] + [r for r, _ in pts], [base] + [s for _, s in pts], marker="o", ms=3, label=k)
        ax.set_xlabel("pruning rate of the layer alone")
        ax.set_ylabel("validation accuracy")
        ax.set_title("Sensitivity of each layer to pruning")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "sensitivity.png", dpi=100)
        plt.close(fig)
        return {"sensitivity_csv": str(out / "sensitivity.csv"), "sensitivity_plot": str(out / "sensitivity.png")}
