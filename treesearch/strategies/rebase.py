"""REBASE (Wu et al. 2024): reward-balanced expansion.

Start with N first steps. At each depth, score the open nodes in one verifier
call, take the paths that finished off the remaining width B, and give each open
node ``round(B · softmax(score / T_b))`` children (summing to B exactly), until
N paths have finished.
"""

from __future__ import annotations

import structlog

from treesearch.config import SearchConfig
from treesearch.context import SearchContext
from treesearch.strategies.select import rebase_widths
from treesearch.tree import ROOT

log = structlog.get_logger(__name__)


async def rebase(ctx: SearchContext, config: SearchConfig) -> list[int]:
    remaining = config.n
    finished: list[int] = []
    frontier = await ctx.expand(ROOT, config.n)
    while True:
        done = [node.id for node in frontier if node.terminal]
        finished += done
        remaining -= len(done)
        open_ids = [node.id for node in frontier if not node.terminal]
        if remaining <= 0 or not open_ids:
            return finished
        scores = await ctx.score(open_ids)
        widths = rebase_widths(scores, remaining, config.rebase_temperature)
        log.debug("rebase_widths", problem_id=ctx.problem.id, nodes=open_ids, widths=widths)
        children = await ctx.expand_many(dict(zip(open_ids, widths, strict=True)))
        frontier = [child for node in open_ids for child in children.get(node, [])]
