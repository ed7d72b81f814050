"""MetaPruning (Liu et al., ICCV 2019): a PruningNet generates the weights of any pruned
network from its encoding, and an evolutionary search over encodings that meet the target
picks the best, scored with generated weights and no fine-tune.

PruningNet (`PruningNet`): for every conv and linear layer of the model, a block of two fully
connected layers takes the network encoding vector (kept channels per group, as fractions)
and outputs the layer's full weight tensor, which is cropped to the kept output and input
channels (the first ones, "top-left", as in the paper). It is trained end to end: each batch
draws a random encoding, the generated network runs forward, the loss trains the blocks.

Design in the ask/tell core: the PruningNet lives in the `pruningnet` evaluator, which holds
the training data. Its training is the strategy's first phase: proposals of phase "train"
(of kind "work": training progress, reported as events, never candidates) each ask the
evaluator to train up to a step count (a chunk), so the job's checkpoints fall between
chunks; the strategy's state keeps the steps trained, and the evaluator saves the PruningNet after every chunk under
`$SECATEURS_CACHE_DIR/pruningnet/` and, in a fresh process (a resumed job, another Ray
worker), reloads it or retrains it deterministically (its sampling is seeded). Then
proposals of phase "evolution" carry encodings; the evaluator generates their weights,
recomputes BN statistics on calibration batches (as the paper does) and validates.

Simplifications: the blocks start from the trained model (the second FC layer's bias is the
model's weights, its weight matrix zero), so the PruningNet begins where the model is instead
of from scratch; BatchNorm affine parameters are shared by all encodings (learned, not
generated) and cropped channels are masked after BN; population sizes default to a small
budget (paper: population 50, 20 generations, top-50, 25 mutations and 25 crossovers).

Addition to the paper, whose only constraint is the upper bound: encodings must also use at
least `min_fraction` (default 0.9) of the budget. Per-group uniform draws mostly land far under
a budget, and since PruningNet scores saturate, nothing pushes the search back up: without the
band the winners used 37-44% of the FLOPs at a 50% target (bench/amc.py, digits) and lost
accuracy after fine-tuning. `min_fraction=0` restores the paper's rule."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from pruning.bn import recalibrate_bn
from pruning.data import dataset_size, sample_fingerprint
from pruning.graph import ChannelGroup
from pruning.registry import OneOf
from pruning.train import default_task, evaluate

from ..base import BatchSize, Count, Fraction, LearningRate, Proposal, Result, SearchError, Steps
from ..evaluators import EvalContext, Evaluator, list_evaluators, register_evaluator
from ..latency import cache_dir
from ..registry import register_strategy
from ..space import SearchSpace
from .amc.env import SpaceCosts
from .common import SpaceStrategy

EVALUATOR = "pruningnet"


class PruningNet(nn.Module):
    """Weight generators for every conv/linear layer of `model`, driven by an encoding vector
    (kept channels / channels of each group, in `groups` order)."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup], hidden: int = 32) -> None:
        super().__init__()
        self.template = copy.deepcopy(model).eval()
        for p in self.template.parameters():
            p.requires_grad_(False)
        self.groups = list(groups)
        self.channels = torch.tensor([g.channels for g in groups], dtype=torch.float32)
        self.group_index = {g.key: i for i, g in enumerate(groups)}
        out_of = {m: g.key for g in groups for m in g.members}
        in_of = {c: g.key for g in groups for c in g.consumers}
        self.layer_names: list[str] = []
        self.layer_groups: dict[str, tuple[str | None, str | None, bool]] = {}
        self.blocks = nn.ModuleDict()
        self.biases = nn.ParameterDict()
        for name, m in self.template.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            safe = name.replace(".", "__")
            fc2 = nn.Linear(hidden, m.weight.numel())
            nn.init.zeros_(fc2.weight)
            with torch.no_grad():
                fc2.bias.copy_(m.weight.detach().flatten())
            self.blocks[safe] = nn.Sequential(nn.Linear(len(groups), hidden), nn.ReLU(), fc2)
            if m.bias is not None:
                self.biases[safe] = nn.Parameter(m.bias.detach().clone())
            depthwise = isinstance(m, nn.Conv2d) and m.groups > 1
            self.layer_names.append(name)
            self.layer_groups[name] = (out_of.get(name), in_of.get(name), depthwise)
        self.bn_affine = nn.ParameterDict()
        self.bn_group: dict[str, str] = {}
        for g in groups:
            for b in g.bns:
                self.bn_group[b] = g.key
        for name, m in self.template.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                safe = name.replace(".", "__")
                self.bn_affine[safe + "__weight"] = nn.Parameter(m.weight.detach().clone())
                self.bn_affine[safe + "__bias"] = nn.Parameter(m.bias.detach().clone())
        self._masks: dict[str, torch.Tensor] = {}
        modules = dict(self.template.named_modules())
        for b in self.bn_group:
            modules[b].register_forward_hook(self._mask_hook(b))

    def _mask_hook(self, bn_name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            mask = self._masks.get(self.bn_group[bn_name])
            return None if mask is None else output * mask.view(1, -1, *([1] * (output.dim() - 2)))

        return hook

    def encode(self, kept: Mapping[str, int]) -> torch.Tensor:
        """The encoding vector of kept counts (fractions of each group's channels)."""
        counts = torch.tensor([float(kept.get(g.key, g.channels)) for g in self.groups])
        return counts / self.channels

    def _channel_mask(self, key: str | None, kept: Mapping[str, int], size: int) -> torch.Tensor:
        mask = torch.ones(size)
        if key is not None:
            mask[int(kept.get(key, size)) :] = 0.0
        return mask

    def generate(self, kept: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The generated, cropped parameters of the network with `kept` channels per group
        (full-size tensors with the cropped rows/columns zeroed)."""
        code = self.encode(kept).to(next(self.parameters()).device)
        modules = dict(self.template.named_modules())
        params: dict[str, torch.Tensor] = {}
        self._masks = {g.key: self._channel_mask(g.key, kept, g.channels).to(code.device) for g in self.groups}
        for name in self.layer_names:
            m = modules[name]
            safe = name.replace(".", "__")
            w = self.blocks[safe](code).view_as(m.weight)
            g_out, g_in, depthwise = self.layer_groups[name]
            out_mask = self._channel_mask(g_out, kept, w.shape[0]).to(code.device)
            shape = [-1] + [1] * (w.dim() - 1)
            w = w * out_mask.view(shape)
            if not depthwise and g_in is not None:
                channels = int(self.channels[self.group_index[g_in]])
                in_mask = self._channel_mask(g_in, kept, channels).to(code.device)
                in_mask = in_mask.repeat_interleave(w.shape[1] // channels)  # a flatten repeats each channel
                w = w * in_mask.view(1, -1, *([1] * (w.dim() - 2)))
            params[name + ".weight"] = w
            if safe in self.biases:
                params[name + ".bias"] = self.biases[safe] * out_mask
        for key, p in self.bn_affine.items():
            name, _, kind = key.rpartition("__")
            params[name.replace("__", ".") + "." + kind] = p
        return params

    def forward(self, x: torch.Tensor, kept: Mapping[str, int]) -> torch.Tensor:
        """Logits of the generated network for `kept` on a batch (the template's train/eval mode)."""
        return functional_call(self.template, self.generate(kept), (x,), strict=False)


class GeneratedNetwork(nn.Module):
    """A fixed network from a PruningNet for one encoding, usable like any model
    (`recalibrate_bn`, `evaluate`)."""

    def __init__(self, net: PruningNet, kept: Mapping[str, int]) -> None:
        super().__init__()
        self.net = net
        with torch.no_grad():
            self.params = {k: v.detach() for k, v in net.generate(kept).items()}
        self.masks = dict(net._masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the generated network (BN in this module's train/eval mode)."""
        self.net._masks = self.masks
        self.net.template.train(self.training)
        return functional_call(self.net.template, self.params, (x,), strict=False)


def random_kept(space: SearchSpace, generator: torch.Generator) -> dict[str, int]:
    """Kept counts drawn uniformly per searchable group within its bounds (others as the space fixes them)."""
    kept = space.kept({})
    for key in space.keys:
        lo = space.kept({key: space.bounds[key][1]})[key]
        hi = space.by_key[key].channels
        kept[key] = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    return kept


@register_evaluator(EVALUATOR)
class PruningNetEvaluator(Evaluator):
    """Trains a PruningNet on the context's training split (phase "train" proposals with
    `meta["train_to"]`) and scores encodings with generated weights after BN recalibration.

    Options: `hidden` (FC width), `lr` (Adam), `batch_size`, `cache` (save/reload the
    PruningNet under the cache folder)."""

    name = EVALUATOR
    gives_cut_model = False  # it scores generated/shared weights, not the cut network's own

    def __init__(
        self,
        context: EvalContext,
        hidden: Annotated[int, Field(ge=1, le=4096)] = 32,
        lr: LearningRate = 1e-3,
        batch_size: BatchSize = 64,
        cache: bool = True,
    ) -> None:
        super().__init__(context)
        if context.space is None:
            raise SearchError("the pruningnet evaluator needs the job's search space")
        self.space: SearchSpace = context.space
        self.hidden, self.lr, self.batch_size, self.cache = int(hidden), float(lr), int(batch_size), bool(cache)
        self.net: PruningNet | None = None
        self.step = 0
        self.last_loss: float | None = None

    # ---- training -----------------------------------------------------------------------
    def _fresh(self) -> PruningNet:
        ctx = self.context
        torch.manual_seed(ctx.seed)
        net = self.net = PruningNet(ctx.model, self.space.groups, self.hidden).to(ctx.device)
        self.opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        self.gen = torch.Generator().manual_seed(ctx.seed)
        self.step = 0
        return net

    def _built(self) -> PruningNet:
        if self.net is None:
            raise SearchError("the PruningNet is not built yet (ensure() builds it)")
        return self.net

    def fingerprint(self) -> str:
        """Identifies the model weights, data, space and options a PruningNet was trained for."""
        h = hashlib.sha1()
        for k, v in self.context.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(sample_fingerprint(self.context.data.train))
        h.update(
            repr(
                (
                    dataset_size(self.context.data.train),
                    self.context.seed,
                    self.hidden,
                    self.lr,
                    self.batch_size,
                    self.space.describe()["groups"],
                )
            ).encode()
        )
        return h.hexdigest()[:16]

    def _path(self, step: int) -> Path:
        return cache_dir().parent / "pruningnet" / f"{self.fingerprint()}-{step}.pt"

    def _save(self) -> None:
        if not self.cache or self.net is None:
            return
        path = self._path(self.step)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "net": self.net.state_dict(),
                "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(),
                "step": self.step,
            }
            torch.save(state, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            saved = sorted(path.parent.glob(f"{self.fingerprint()}-*.pt"), key=lambda p: int(p.stem.rpartition("-")[2]))
            for old in saved[:-2]:  # keep the last two chunks: a resume may restart the last one
                old.unlink(missing_ok=True)
        except OSError:
            pass

    def _load(self, step: int) -> bool:
        path = self._path(step)
        if not self.cache or not path.exists():
            return False
        state = torch.load(path, map_location=self.context.device, weights_only=True)
        self._fresh().load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step = int(state["step"])
        return True

    def ensure(self, step: int) -> None:
        """Bring the PruningNet to exactly `step` training steps (continue, reload or retrain)."""
        if self.net is not None and self.step == step:
            return
        if (self.net is None or self.step > step) and not self._load(step):
            self._fresh()
        if self.step < step:
            self.train_to(step)

    def train_to(self, step: int) -> float:
        """Train from the current step to `step` on the task's loss; returns the task's score
        over the training batches (the mean loss is left in `last_loss`)."""
        ctx = self.context
        task = default_task(ctx.task)
        data = ctx.data.train
        n = dataset_size(data)
        net = self._built()
        metric = task.metric()
        loss_sum, steps = 0.0, 0
        net.template.train()
        while self.step < step:
            idx = torch.randint(0, n, (self.batch_size,), generator=self.gen)
            batch = (
                torch.stack([data[int(i)][0] for i in idx]),
                torch.stack([torch.as_tensor(data[int(i)][1]) for i in idx]),
            )
            x, y = task.batch(batch, ctx.device)
            kept = random_kept(self.space, self.gen)
            out = task.outputs(net(x, kept))
            loss = task.loss(out, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            metric.update(_detached(out), y)
            loss_sum, steps = loss_sum + float(loss.detach()), steps + 1
            self.step += 1
        net.template.eval()
        self._save()
        self.last_loss = loss_sum / steps if steps else None
        return metric.compute().value

    # ---- scoring ------------------------------------------------------------------------
    def generated(self, policy: Mapping[str, float]) -> GeneratedNetwork:
        """The network an encoding gets, with BN statistics recomputed on calibration batches."""
        ctx = self.context
        if not ctx.calibration:
            raise SearchError("the pruningnet evaluator needs calibration batches from the training split")
        gen = GeneratedNetwork(self._built(), self.space.kept(policy))
        recalibrate_bn(gen, ctx.calibration)
        return gen

    def evaluate(
        self,
        policy: Mapping[str, float],
        phase: str = "search",
        proposal_id: int = -1,
        meta: dict[str, Any] | None = None,
    ) -> Result:
        """Phase "train": train to `meta["train_to"]`; else score the policy's encoding with
        the PruningNet trained for `meta["pruningnet_steps"]` steps."""
        t0 = time.perf_counter()
        meta = dict(meta or {})
        space = self.space
        if phase == "train":
            self.ensure(int(meta.get("train_from", self.step)))
            score = self.train_to(int(meta["train_to"]))
            meta.update(train_accuracy=float(score), train_loss=self.last_loss)
        else:
            self.ensure(int(meta.get("pruningnet_steps", self.step)))
            score = evaluate(
                self.generated(policy),
                self.context.data.val,
                batch_size=self.context.batch_size,
                max_batches=self.context.val_batches,
                task=self.context.task,
            )
        res = space.resources(policy)
        return Result(
            proposal_id=proposal_id,
            policy={k: float(v) for k, v in policy.items()},
            score=float(score),
            flops=int(res["flops"]),
            params=int(res["params"]),
            memory_bytes=int(res["memory_bytes"]),
            latency_ms=res.get("latency_ms"),
            phase=phase,
            wall_seconds=time.perf_counter() - t0,
            meta={**meta, "evaluator": self.name, "pruningnet_steps": self.step},
        )


@register_strategy("metapruning")
class MetaPruningStrategy(SpaceStrategy):
    """PruningNet training in chunks (phase "train"), then evolutionary search (phase
    "evolution") over kept-channel encodings that meet the target.

    Options: `train_steps` (PruningNet SGD steps), `train_chunk` (steps per proposal),
    `population`, `generations`, `topk` (parents kept across generations), `mutation_prob`
    (per-gene), `min_fraction` (encodings use at least this share of the budget; falls back to
    the budget alone when random draws cannot reach the band), `evaluator` (default "pruningnet")."""

    name = "metapruning"
    default_evaluator = EVALUATOR

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        train_steps: Steps = 400,
        train_chunk: Count = 100,
        population: Count = 20,
        generations: Count = 8,
        topk: Count = 5,
        mutation_prob: Fraction = 0.1,
        min_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.9,
        evaluator: Annotated[str, OneOf(list_evaluators)] = EVALUATOR,
    ) -> None:
        super().__init__(space, seed)
        self.train_steps, self.train_chunk = int(train_steps), int(train_chunk)
        self.population, self.generations, self.topk = int(population), int(generations), int(topk)
        self.mutation_prob, self.evaluator = float(mutation_prob), evaluator
        self.costs = SpaceCosts(space)
        self.floor = self._band_floor(float(min_fraction))
        self.gen = torch.Generator().manual_seed(self.seed)
        self.trained = 0
        self.generation = 0
        self.queue: list[dict[str, int]] = []
        self.scored: list[tuple[float, dict[str, int], int]] = []

    # ---- encodings ----------------------------------------------------------------------
    def _band_floor(self, min_fraction: float) -> float:
        """The least resource an encoding may use: `min_fraction` of the budget, or 0 when a
        seeded probe of random draws finds none in the band (a budget near the smallest net)."""
        floor = min_fraction * self.space.budget
        if floor <= 0:
            return 0.0
        probe = torch.Generator().manual_seed(self.seed + 7919)
        for _ in range(2000):
            used = self.costs.resource(random_kept(self.space, probe))
            if floor <= used <= self.space.budget:
                return floor
        return 0.0

    def feasible(self, kept: Mapping[str, int]) -> bool:
        """Whether an encoding's network meets the target and uses at least the band's floor."""
        return self.floor <= self.costs.resource(dict(kept)) <= self.space.budget

    def _random(self) -> dict[str, int]:
        for _ in range(1000):
            kept = random_kept(self.space, self.gen)
            if self.feasible(kept):
                return kept
        return self.space.kept(self.space.smallest_policy())

    def _mutate(self, parent: Mapping[str, int]) -> dict[str, int] | None:
        child = dict(parent)
        fresh = random_kept(self.space, self.gen)
        for key in self.space.keys:
            if float(torch.rand(1, generator=self.gen)) < self.mutation_prob:
                child[key] = fresh[key]
        return child if self.feasible(child) else None

    def _crossover(self, a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int] | None:
        child = {k: (a[k] if float(torch.rand(1, generator=self.gen)) < 0.5 else b[k]) for k in a}
        return child if self.feasible(child) else None

    def _next_generation(self) -> list[dict[str, int]]:
        """Half mutations and half crossovers of the top-k so far (infeasible children are
        redrawn, as the paper discards them), distinct from everything already scored."""
        if self.generation == 0:
            return [self._random() for _ in range(self.population)]
        parents = [kept for _, kept, _ in sorted(self.scored, key=lambda t: -t[0])[: self.topk]]
        seen = {tuple(sorted(k.items())) for _, k, _ in self.scored}
        out: list[dict[str, int]] = []
        tries = 0
        while len(out) < self.population and tries < 50 * self.population:
            tries += 1
            if len(out) < self.population // 2:
                child = self._mutate(parents[int(torch.randint(len(parents), (1,), generator=self.gen))])
            else:
                i, j = torch.randint(len(parents), (2,), generator=self.gen).tolist()
                child = self._crossover(parents[i], parents[j])
            if child is None or tuple(sorted(child.items())) in seen:
                continue
            seen.add(tuple(sorted(child.items())))
            out.append(child)
        while len(out) < self.population:
            out.append(self._random())
        return out

    def _policy(self, kept: Mapping[str, int]) -> dict[str, float]:
        return {k: self.space.rate_for_kept(k, kept[k]) for k in self.space.keys}

    # ---- ask/tell -----------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Proposal]:
        """One training chunk at a time, then the current generation's encodings."""
        again = self._reissued(n)
        if again:
            return again
        if self.trained < self.train_steps:
            if self.outstanding:
                return []
            step = min(self.train_steps, self.trained + self.train_chunk)
            return [self._propose({}, "train", self.evaluator, kind="work", train_from=self.trained, train_to=step)]
        if not self.queue and self.generation < self.generations:
            if self.outstanding:
                return []
            self.queue = self._next_generation()
            self.generation += 1
        out: list[Proposal] = []
        while self.queue and len(out) < n:
            kept = self.queue.pop(0)
            out.append(
                self._propose(
                    self._policy(kept),
                    "evolution",
                    self.evaluator,
                    generation=self.generation,
                    pruningnet_steps=self.trained,
                    encoding=dict(kept),
                )
            )
        return out

    def tell(self, results: list[Result]) -> None:
        """Count trained steps; record each encoding's score for selection."""
        for r in self._accept(results):
            if r.phase == "train":
                self.trained = max(self.trained, int(r.meta.get("train_to", self.trained)))
            else:
                self._score(r)

    def _score(self, r: Result) -> None:
        kept = self.space.kept(r.policy)
        self.scored.append((r.score, {k: kept[k] for k in self.space.keys}, r.proposal_id))

    @property
    def done(self) -> bool:
        return (
            self.trained >= self.train_steps
            and self.generation >= self.generations
            and not self.queue
            and not self.outstanding
        )

    @property
    def best(self) -> Result | None:
        return self._best_of([r for r in self.history if r.phase != "train"])

    def progress(self) -> dict[str, Any]:
        evo_total = self.population * self.generations
        done_evo = len(self.scored)
        total = self.train_steps + evo_total * 10
        fraction = (self.trained + done_evo * 10) / max(1, total)
        if self.trained < self.train_steps:
            phase = f"MetaPruning: training PruningNet {self.trained}/{self.train_steps} steps"
        else:
            best = self.best
            phase = f"MetaPruning: generation {self.generation}/{self.generations}"
            if best is not None:
                phase += f", best {best.score:.4f}"
        return {"fraction": min(1.0, fraction), "phase": phase}

    def _extra_state(self) -> dict[str, Any]:
        # training progress is the step count (the evaluator reloads its PruningNet by step);
        # scored encodings come back from the record; the queue holds at most one generation
        return {
            "gen": self.gen.get_state(),
            "trained": self.trained,
            "generation": self.generation,
            "queue": [dict(k) for k in self.queue],
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.trained, self.generation = int(state["trained"]), int(state["generation"])
        self.queue = [{k: int(v) for k, v in d.items()} for d in state["queue"]]
        self.scored = []
        for r in self.history:
            if r.phase != "train":
                self._score(r)


def _detached(out: Any) -> Any:
    """Outputs (a tensor or a dict of them) without their graph, for a metric."""
    return {k: v.detach() for k, v in out.items()} if isinstance(out, dict) else out.detach()
