"""Beam search, lookahead search and DVTS: keep the best-scored steps, grow them, repeat.

Beam (Snell et al.; search-and-learn): N first steps; each round, score the open
candidates in one verifier call, keep the top N/M, and give them N children
between them (M each when M divides N; one request with ``n`` per kept beam),
until N paths have finished with an answer; the N best-scored are the candidates.
Lookahead values each candidate by the score at the end of a greedy rollout of
up to k more steps (k = 0 is beam). DVTS splits N into N/M independent subtrees,
each following its single best of M children per step until that child has
finished; a subtree returns its last finished children.
"""

from __future__ import annotations

from collections.abc import Sequence

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT
from treesearch.errors import BudgetExhausted
from treesearch.strategies.frontier import grow
from treesearch.strategies.select import beam_widths, top_k


async def beam(ctx: SearchContext, config: SearchConfig, *, lookahead: int = 0) -> None:
    def answered(finished: Sequence[int]) -> bool:
        return sum(ctx.tree.node(node).answer is not None for node in finished) >= config.n

    await grow(
        ctx,
        config,
        widths=lambda _, values, __: beam_widths(values, config.n, config.beam_width),
        stop=answered,
        lookahead=lookahead,
    )


async def lookahead(ctx: SearchContext, config: SearchConfig) -> None:
    await beam(ctx, config, lookahead=config.lookahead)


async def dvts(ctx: SearchContext, config: SearchConfig) -> None:
    candidates: list[int] = []
    ctx.candidates = candidates

    def finished(children: Sequence[int]) -> None:
        """Add the finished ones of ``children``, once: subtrees refused at the root all see
        the root's children."""
        candidates.extend(
            child for child in children if ctx.tree.node(child).terminal and child not in candidates
        )

    async def subtree() -> None:
        """Follow the best of M children until it has finished; its finished siblings come too
        (and, when the budget refuses a step, the finished children that step got)."""
        node = ROOT
        while True:
            try:
                children = [child.id for child in await ctx.expand(node, config.beam_width)]
                (best,) = top_k(children, await ctx.score(children), 1)
            except BudgetExhausted:
                finished([child.id for child in ctx.tree.children(node)])
                raise
            if ctx.tree.node(best).terminal:
                finished(children)
                return
            node = best

    await gather([subtree for _ in range(max(1, config.n // config.beam_width))])
