"""Beam search, lookahead search and DVTS: keep the best-scored steps, grow them, repeat.

Beam (Snell et al.; search-and-learn): N first steps; each round, score the open
candidates in one verifier call, keep the top N/M, and ask for M children of
each (one request with ``n=M`` per kept beam), until N paths have finished or
the depth limit. Lookahead values each candidate by the score at the end of a
greedy rollout of up to k more steps (k = 0 is beam). DVTS splits N into N/M
independent subtrees, each following its single best of M children per step
until that child has finished; a subtree returns its last finished children.
"""

from __future__ import annotations

from functools import partial

from treesearch.config import SearchConfig
from treesearch.context import SearchContext, gather
from treesearch.strategies.select import top_k
from treesearch.tree import ROOT


async def beam(ctx: SearchContext, config: SearchConfig, *, lookahead: int = 0) -> list[int]:
    keep = max(1, config.n // config.beam_width)
    finished: list[int] = []
    frontier = await ctx.expand(ROOT, config.n)
    while True:
        finished += [node.id for node in frontier if node.terminal]
        open_ids = [node.id for node in frontier if not node.terminal]
        if len(finished) >= config.n or not open_ids:
            return finished
        values = await _values(ctx, open_ids, lookahead)
        kept = top_k(open_ids, values, keep)
        children = await ctx.expand_many({node: config.beam_width for node in kept})
        frontier = [child for node in kept for child in children[node]]


async def lookahead(ctx: SearchContext, config: SearchConfig) -> list[int]:
    return await beam(ctx, config, lookahead=config.lookahead)


async def _values(ctx: SearchContext, node_ids: list[int], steps: int) -> list[float]:
    """Each node's score, or (``steps`` > 0) the score where its greedy rollout ends."""
    ends = node_ids
    if steps:
        rolled = await gather(
            [partial(ctx.rollout, node, temperature=0.0, max_steps=steps) for node in node_ids]
        )
        ends = [node.id for node in rolled]
    return await ctx.score(ends)


async def dvts(ctx: SearchContext, config: SearchConfig) -> list[int]:
    async def subtree() -> list[int]:
        """Follow the best of M children until it has finished; its finished siblings come too."""
        node = ROOT
        while True:
            children = [child.id for child in await ctx.expand(node, config.beam_width)]
            if not children:
                return []
            (node,) = top_k(children, await ctx.score(children), 1)
            if ctx.tree.node(node).terminal:
                return [child for child in children if ctx.tree.node(child).terminal]

    subtrees = max(1, config.n // config.beam_width)
    results = await gather([subtree for _ in range(subtrees)])
    return [node for finished in results for node in finished]
