"""Recursive self-aggregation (Venkatraman et al. 2025): a population improved by aggregation.

A population of N (``n``) whole solutions is sampled in one request; each of T
(``rsa_rounds``) rounds makes N new solutions, each from an aggregation prompt showing K
(``rsa_k``, at most N) members of the current population drawn at random without
replacement, and the new population replaces the old; a majority vote over the last
population decides. That is N × (T + 1) generations, in 1 + N × T requests when the
endpoint honours ``n``. The defaults (K = 4, T = 9) are the authors' code's (its
``eval_loop.py``: ``--k 4 --population 16 --loops 10``, the first loop sampling the
population); its aggregation prompt is the model of ours. Each shown solution is cut to its
last ``shown_tokens`` tokens, as generative selection cuts them.

Seeds that hold: member i of round t draws its subset from a generator seeded by the run's
seed, the problem, t and i, and its request's seed from the same place in the tree, so a
seeded run gives the same populations at any concurrency. Each new member records the
members it was shown (``Node.shown``). ``ctx.candidates`` is the population as it stands
(member i is replaced when its aggregate arrives), so a budget that runs out mid-round
votes over the newest solution of every place.
"""

from __future__ import annotations

import random
from functools import partial

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, in_order
from treesearch.strategies.genselect import shown, with_solutions

_AGGREGATE_TEMPLATE = (
    "{question}\n\nHere are {count} candidate solutions to this problem; some may contain "
    "mistakes.\n\n{solutions}\n\nAggregate them into one better solution: keep the sound ideas, "
    "and where the candidates disagree, work out which is right; if they are all wrong, try "
    "another approach. Write the complete solution and state its final answer."
)


def subset(seed: int | None, problem_id: str, round_: int, index: int, size: int, k: int) -> list[int]:
    """The places in a population of ``size`` that member ``index`` of round ``round_`` is
    shown: ``k`` (at most ``size``) drawn without replacement, in the order drawn; the same
    for the same seed whatever order the members are made in (fresh draws without a seed)."""
    rng = random.Random(None if seed is None else f"{seed}:{problem_id}:{round_}:{index}")
    return rng.sample(range(size), min(k, size))


async def rsa(ctx: SearchContext, config: SearchConfig) -> None:
    population = [node.id for node in in_order(await ctx.expand(ROOT, config.n, whole=True))]
    ctx.candidates = population
    for round_ in range(1, config.rsa_rounds + 1):
        population = await _next_population(ctx, config, population, round_)


async def _next_population(
    ctx: SearchContext, config: SearchConfig, current: list[int], round_: int
) -> list[int]:
    """Round ``round_``'s population, each member aggregated from a subset of ``current``."""
    newest = ctx.candidates = list(current)

    async def aggregate(index: int) -> None:
        places = subset(ctx.sampling.seed, ctx.problem.id, round_, index, len(current), config.rsa_k)
        members = [ctx.tree.node(current[place]) for place in places]
        texts = [shown(node, config.shown_tokens) for node in members]
        prompt = with_solutions(ctx.problem, _AGGREGATE_TEMPLATE, texts, "---- Solution {} ----")
        (made,) = await ctx.expand(ROOT, 1, whole=True, prompt=prompt, stream=f"rsa {round_}.{index}:")
        ctx.tree.update(made.id, shown=tuple(node.id for node in members))
        newest[index] = made.id

    await gather([partial(aggregate, index) for index in range(len(current))])
    return newest
