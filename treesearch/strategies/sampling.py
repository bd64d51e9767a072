"""Sampling: N independent solutions, for voting and best-of-N.

A whole solution comes from one request (all N in one request when the endpoint
honours ``n``); step by step, the N first steps come from one request and each
path then rolls out on its own, so a slow path never holds the others back.
Filter-vote may count its budget as Chen et al. do: K calls are K/2 generations
and K/2 judgements (``n_counts_judgements``).
"""

from __future__ import annotations

from functools import partial

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT


async def sample(ctx: SearchContext, config: SearchConfig, *, n: int | None = None) -> None:
    """Every finished path is a candidate, so this leaves ``ctx.candidates`` unset."""
    firsts = await ctx.expand(ROOT, config.n if n is None else n, whole=config.whole)
    await gather([partial(ctx.rollout, node.id) for node in firsts if not node.terminal])


async def sample_to_judge(ctx: SearchContext, config: SearchConfig) -> None:
    await sample(ctx, config, n=config.n // 2 if config.n_counts_judgements else config.n)
