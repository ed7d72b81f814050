"""AMC and MetaPruning against uniform on ResNet-20 / digits (16 px) at a FLOPs target, over seeds.

Run by hand:  python -m bench.amc [--target flops=0.5] [--seeds 0 1 2] [--episodes 60] [--warmup 15]
              [--rllib ppo] [--train-epochs 10] [--finetune-epochs 2] [--json out.json] [--plot rewards.png]

Per seed s: train ResNet-20 (seed s); the uniform baseline is the bisected uniform rate at the
target. AMC (DDPG, `reconstruct` evaluator, no fine-tune per candidate) and, with `--rllib`,
the RLlib agent on the same environment and episode budget, each pick a policy; MetaPruning
trains its PruningNet and runs its evolutionary search. Reported on the test split:
- before fine-tuning: uniform vs AMC, both after least-squares reconstruction;
- after the same fine-tune (L1 cut, adaptive BN, `--finetune-epochs` of SGD, as the pipeline
  does): uniform vs AMC vs MetaPruning;
- AMC's mean reward over the warm-up episodes vs the last 20% of episodes;
- MetaPruning: Spearman rank correlation between PruningNet-weight accuracy and accuracy
  after fine-tuning for `--rank-encodings` random feasible encodings, and the evolution's best
  PruningNet score vs the best of as many random feasible encodings (the correlation on the
  first seed only, it costs a fine-tune per encoding);
- with `--proxy-check N`: N random policies that use 94-100% of the budget (uniform plus
  per-group noise), each scored by AMC's reward proxy (validation accuracy after least-squares
  reconstruction) and fine-tuned: the Spearman correlation between the two says whether any
  proxy-guided search can pick a better policy than uniform at this budget, and uniform's rank
  among them says how much room there is.
Every "after fine-tune" figure is the mean over `--finetune-seeds` fine-tunes of the policy
(one image of the 359-image test split is 0.28 points; one fine-tune's seed moves a policy by
about that much). `--json` writes {"seeds": [...], "calls": [the call that wrote it]}; each
seed's base model is trained once and cached in runs/bench-amc.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, base_model, eval_context, markdown_table, spearman, this_call, write_results
from pruning.bn import recalibrate_bn
from pruning.data import calibration_batches, load_dataset
from pruning.train import TrainConfig, evaluate, train
from search.evaluators import make_evaluator
from search.registry import make_strategy
from search.runner import run_search
from search.space import SearchSpace, bisect_scalar
from search.strategies.amc.reconstruct import prune_and_reconstruct
from search.strategies.metapruning import random_kept

SHAPE = (1, 16, 16)
BASES = ROOT / "runs" / "bench-amc"
"""Where each seed's trained ResNet-20 is cached (by its training key)."""


def rho(value: float | None) -> str:
    """A Spearman rho for the text ("undefined" where `bench.common.spearman` gives None)."""
    return "undefined" if value is None else f"{value:.2f}"


def finetuned(model, space, policy, data, calib, epochs: float, seed: int, repeats: int = 1) -> float:
    """Test accuracy after the pipeline's final step (L1 cut, adaptive BN, fine-tune), the mean
    over `repeats` fine-tunes with seeds seed, seed + 100, ..."""
    accs = []
    for i in range(repeats):
        pruned = space.cut(policy, "l1", calib, model=model)
        recalibrate_bn(pruned, calib)
        train(pruned, data.train, TrainConfig(epochs=epochs, lr=0.01, seed=seed + 100 * i), device="cpu")
        accs.append(evaluate(pruned, data.test))
    return statistics.mean(accs)


def near_budget_policies(space, n: int, seed: int, sigma: float = 0.15, least: float = 0.94) -> list[dict]:
    """`n` random policies that use between `least` and all of the budget: a shared rate plus
    per-group normal noise (std `sigma`), the shared rate bisected onto the budget."""
    rng = np.random.default_rng(seed + 7)
    out: list[dict] = []
    while len(out) < n:
        noise = rng.normal(0.0, sigma, len(space.keys))

        def policy(u: float, noise: np.ndarray = noise) -> dict:  # this iteration's noise, bound here
            return {k: float(np.clip(u + noise[i], 0.0, space.bounds[k][1])) for i, k in enumerate(space.keys)}

        _, candidate = bisect_scalar(space, policy, 0.0, 1.0)
        if space.resource(candidate) >= least * space.budget:
            out.append(candidate)
    return out


def proxy_check(model, space, ctx, data, calib, args, seed: int, uniform_ft: float) -> dict:
    """Rank correlation of AMC's proxy with accuracy after fine-tune over near-budget policies,
    and where uniform's fine-tuned accuracy ranks among them."""
    ev = make_evaluator("reconstruct", ctx)
    proxy, ft = [], []
    for policy in near_budget_policies(space, args.proxy_check, seed):
        proxy.append(ev.evaluate(policy, "proxy-check").score)
        ft.append(finetuned(model, space, policy, data, calib, args.finetune_epochs, seed, args.finetune_seeds))
    return {
        "spearman": spearman(proxy, ft),
        "uniform_rank": 1 + sum(a > uniform_ft for a in ft),
        "policies": len(ft),
        "finetuned_max": max(ft),
        "finetuned_median": statistics.median(ft),
    }


def reconstructed(model, space, policy, data, calib, seed: int) -> float:
    """Test accuracy after least-squares reconstruction, no fine-tune."""
    pruned, _ = prune_and_reconstruct(model, space.kept(policy), "l1", SHAPE, calib, seed=seed)
    return evaluate(pruned, data.test)


def run_amc(space, ctx, seed: int, episodes: int, warmup: int, agent: str) -> tuple[dict, list[float]]:
    """One AMC search; its best policy and the reward of every episode."""
    strategy = make_strategy("amc", space, seed=seed, episodes=episodes, warmup=warmup, agent=agent)
    t0 = time.perf_counter()
    try:
        outcome = run_search(strategy, make_evaluator("reconstruct", ctx))
    finally:
        strategy.close()
    return {
        "policy": outcome.best.policy,
        "val": outcome.best.score,
        "seconds": time.perf_counter() - t0,
        "flops_ratio": space.fraction(outcome.best.policy),
    }, list(strategy.rewards)


def bench_seed(seed: int, args: argparse.Namespace) -> dict:
    """Every number of the table for one seed."""
    data = load_dataset("digits", input_size=16, seed=0)
    facts = {"name": "digits", "input_size": 16, "subset": None, "split_seed": 0}
    tcfg = TrainConfig(epochs=args.train_epochs, lr=0.05, seed=seed)
    model = base_model("resnet20", data, tcfg, facts, BASES).model
    calib = calibration_batches(data.train, 4, 64, seed=seed)
    space = SearchSpace(model, SHAPE, args.target, calibration=calib)
    ctx = eval_context(model, data, space, calib, seed)
    out: dict = {"seed": seed, "base_test": evaluate(model, data.test)}

    uniform = make_strategy("uniform", space, seed=seed).policy
    out["uniform"] = {
        "flops_ratio": space.fraction(uniform),
        "reconstructed": reconstructed(model, space, uniform, data, calib, seed),
        "finetuned": finetuned(model, space, uniform, data, calib, args.finetune_epochs, seed, args.finetune_seeds),
    }

    if args.proxy_check:
        out["proxy_check"] = proxy_check(model, space, ctx, data, calib, args, seed, out["uniform"]["finetuned"])
    if args.amc:
        amc, rewards = run_amc(space, ctx, seed, args.episodes, args.warmup, "ddpg")
        tail = rewards[-max(1, len(rewards) // 5) :]
        amc.update(
            reconstructed=reconstructed(model, space, amc["policy"], data, calib, seed),
            finetuned=finetuned(
                model, space, amc["policy"], data, calib, args.finetune_epochs, seed, args.finetune_seeds
            ),
            warmup_reward=statistics.mean(rewards[: args.warmup]),
            last20_reward=statistics.mean(tail),
            rewards=rewards,
        )
        out["amc"] = amc
    if args.rllib:
        rl, rl_rewards = run_amc(space, ctx, seed, args.episodes, args.warmup, f"rllib-{args.rllib}")
        rl.update(
            reconstructed=reconstructed(model, space, rl["policy"], data, calib, seed),
            last20_reward=statistics.mean(rl_rewards[-max(1, len(rl_rewards) // 5) :]),
            rewards=rl_rewards,
        )
        out["rllib"] = rl

    if args.metapruning:
        ev = make_evaluator("pruningnet", ctx, cache=False)
        mp = make_strategy(
            "metapruning",
            space,
            seed=seed,
            train_steps=args.pruningnet_steps,
            population=args.population,
            generations=args.generations,
            topk=args.topk,
        )
        t0 = time.perf_counter()
        outcome = run_search(mp, ev)
        best = outcome.best
        evo = [r for r in outcome.results if r.phase == "evolution"]
        gen = torch.Generator().manual_seed(seed + 1000)
        random_scores = []
        while len(random_scores) < len(evo):
            kept = random_kept(space, gen)
            if mp.feasible(kept):
                policy = {k: space.rate_for_kept(k, kept[k]) for k in space.keys}
                random_scores.append(ev.evaluate(policy, "random", meta={"pruningnet_steps": mp.trained}).score)
        rank_net, rank_ft = [], []
        for _ in range(args.rank_encodings if seed == args.seeds[0] else 0):
            kept = mp._random()
            policy = {k: space.rate_for_kept(k, kept[k]) for k in space.keys}
            rank_net.append(ev.evaluate(policy, "random", meta={"pruningnet_steps": mp.trained}).score)
            rank_ft.append(
                finetuned(model, space, policy, data, calib, args.finetune_epochs, seed, args.finetune_seeds)
            )
        out["metapruning"] = {
            "policy": best.policy,
            "val": best.score,
            "flops_ratio": space.fraction(best.policy),
            "seconds": time.perf_counter() - t0,
            "finetuned": finetuned(
                model, space, best.policy, data, calib, args.finetune_epochs, seed, args.finetune_seeds
            ),
            "evolution_best": max(r.score for r in evo),
            "random_best": max(random_scores),
            "candidates": len(evo),
            "spearman": spearman(rank_net, rank_ft) if rank_net else None,
        }
    return out


def plot_rewards(results: list[dict], path: Path, warmup: int, target: str) -> None:
    """Reward per episode (DDPG, and RLlib if run) for every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in results:
        if "amc" in r:
            ax.plot(r["amc"]["rewards"], lw=1, label=f"DDPG seed {r['seed']}")
        if "rllib" in r:
            ax.plot(r["rllib"]["rewards"], lw=1, ls="--", label=f"RLlib seed {r['seed']}")
    ax.axvline(warmup - 0.5, color="grey", ls=":", label="end of warm-up")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward (-error after reconstruction)")
    ax.set_title(f"AMC on ResNet-20 / digits, {target}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: list[dict]) -> str:
    """The Markdown table of the results (mean over seeds, then each seed)."""

    def mean(key: str, sub: str, per_seed: bool = False) -> str:
        vals = [r[key][sub] for r in results if key in r and r[key].get(sub) is not None]
        if not vals:
            return "-"
        seeds = f" ({' / '.join(f'{v:.4f}' for v in vals)})" if per_seed and len(vals) > 1 else ""
        return f"{statistics.mean(vals):.4f}{seeds}"

    rows = []
    for key, label in (
        ("uniform", "uniform (L1)"),
        ("amc", "AMC, DDPG"),
        ("rllib", "AMC, RLlib"),
        ("metapruning", "MetaPruning"),
    ):
        if any(key in r for r in results):
            rows.append(
                [label, mean(key, "flops_ratio"), mean(key, "reconstructed"), mean(key, "finetuned", per_seed=True)]
            )
    header = ["method", "FLOPs ratio", "test acc. after LS reconstruction", "test acc. after fine-tune (per seed)"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON and the reward plot if asked."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--rllib", choices=["ppo", "sac"], default=None)
    ap.add_argument("--no-metapruning", dest="metapruning", action="store_false")
    ap.add_argument("--no-amc", dest="amc", action="store_false", help="skip the DDPG agent (MetaPruning only)")
    ap.add_argument("--pruningnet-steps", type=int, default=400)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument(
        "--rank-encodings", type=int, default=20, help="encodings fine-tuned for the rank correlation (first seed)"
    )
    ap.add_argument("--train-epochs", type=float, default=10)
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--finetune-seeds", type=int, default=1, help="fine-tunes averaged per policy")
    ap.add_argument("--proxy-check", type=int, default=0, help="near-budget random policies for the proxy rank check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--replot", type=Path, default=None, help="print the table and plot from an earlier --json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: list[dict] = []
    if args.replot:  # a file of this form, or of the older one (the list of seeds alone)
        saved = json.loads(args.replot.read_text())
        results = saved["seeds"] if isinstance(saved, dict) else saved
    calls = [this_call("bench.amc", argv)]
    for seed in [] if args.replot else args.seeds:
        results.append(bench_seed(seed, args))
        print(json.dumps(results[-1], default=str)[:2000], file=sys.stderr, flush=True)
        if args.json:
            write_results(args.json, {"seeds": results}, calls)
    print(table(results))
    for r in results:
        line = f"seed {r['seed']}: base {r['base_test']:.4f}"
        if "amc" in r:
            line += f"; AMC reward warm-up {r['amc']['warmup_reward']:.4f} -> last 20% {r['amc']['last20_reward']:.4f}"
        if "rllib" in r:
            line += f"; RLlib last 20% {r['rllib']['last20_reward']:.4f}"
        if "metapruning" in r:
            m = r["metapruning"]
            line += (
                f"; MetaPruning evolution best {m['evolution_best']:.4f} vs random best {m['random_best']:.4f} "
                f"({m['candidates']} each), Spearman {rho(m['spearman'])}"
            )
        if "proxy_check" in r:
            c = r["proxy_check"]
            line += (
                f"; proxy check over {c['policies']} near-budget policies: Spearman {rho(c['spearman'])}, "
                f"uniform ranks {c['uniform_rank']} (fine-tuned max {c['finetuned_max']:.4f}, "
                f"median {c['finetuned_median']:.4f})"
            )
        print(line)
    if args.plot:
        plot_rewards(results, args.plot, args.warmup, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
