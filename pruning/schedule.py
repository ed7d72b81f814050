"""Iterative pruning (the survey's steps 2 and 3, repeated): reach a network's final widths in
several cuts, a little at a time, with a fine-tune after each, instead of one cut. This module
holds the plan: the widths after each cut and the share of a fine-tune budget each round gets."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import PruningError


def geometric_path(original: Mapping[str, int], final: Mapping[str, int], rounds: int) -> list[dict[str, int]]:
    """Kept channels per group after each of `rounds` cuts that take a network from `original`
    to `final` widths a little at a time: every group keeps the same share of what it kept
    before at each cut (kept after cut k = C * (c / C) ** (k / rounds), rounded), so the
    widths shrink geometrically, never grow between cuts, and the last cut is `final` exactly."""
    if rounds < 1:
        raise PruningError(f"an iterative schedule needs at least one round, got {rounds}")
    if set(original) != set(final):
        raise PruningError("the original and final widths name different channel groups")
    path: list[dict[str, int]] = []
    previous = dict(original)
    for k in range(1, rounds + 1):
        step = {}
        for key, channels in original.items():
            goal = int(final[key])
            if not 1 <= goal <= channels:
                raise PruningError(f"group {key}: final width {goal} is outside [1, {channels}]")
            share = (goal / channels) ** (k / rounds)
            step[key] = goal if k == rounds else max(goal, min(previous[key], round(channels * share)))
        path.append(step)
        previous = step
    return path


def split_budget(total: int, rounds: int) -> list[int]:
    """`total` fine-tune steps shared over `rounds` rounds as evenly as whole steps allow (the
    first rounds take the remainder), so the rounds together run exactly the one-shot budget."""
    if rounds < 1 or total < 0:
        raise PruningError(f"cannot split {total} steps over {rounds} rounds")
    return [total // rounds + (1 if k < total % rounds else 0) for k in range(rounds)]
