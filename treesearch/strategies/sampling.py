"""Sampling: N independent solutions, for voting and best-of-N.

A whole solution comes from one request (all N in one request when the endpoint
honours ``n``); step by step, the N first steps come from one request and each
path then rolls out on its own, so a slow path never holds the others back.
"""

from __future__ import annotations

from functools import partial

from treesearch.config import SearchConfig
from treesearch.context import SearchContext, gather
from treesearch.tree import ROOT


async def sample(ctx: SearchContext, config: SearchConfig) -> None:
    """Every finished path is a candidate, so this returns None."""
    firsts = await ctx.expand(ROOT, config.n, whole=config.whole)
    await gather([partial(ctx.rollout, node.id) for node in firsts if not node.terminal])
