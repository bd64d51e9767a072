"""MCTS, the baseline the papers beat: UCT selection with the verifier's score as value.

Each iteration walks down by UCT to a leaf, expands it with M children (one
request), scores them in one verifier call, and backs the best child's score
up the path. The number of iterations (``n``) is its budget.
"""

from __future__ import annotations

from collections import defaultdict

from treesearch.config import SearchConfig
from treesearch.context import SearchContext
from treesearch.strategies.select import top_k, uct
from treesearch.tree import ROOT


async def mcts(ctx: SearchContext, config: SearchConfig) -> None:
    visits: defaultdict[int, int] = defaultdict(int)
    value_sum: defaultdict[int, float] = defaultdict(float)
    tree = ctx.tree
    for _ in range(config.n):
        path = [ROOT]
        while (children := tree.children(path[-1])) and not tree.node(path[-1]).terminal:
            parent_visits = visits[path[-1]]
            path.append(
                max(
                    (child.id for child in children),
                    key=lambda c: uct(value_sum[c], visits[c], parent_visits, config.mcts_c),
                )
            )
        leaf = path[-1]
        if tree.node(leaf).terminal:
            (value,) = await ctx.score([leaf])
        else:
            kids = [child.id for child in await ctx.expand(leaf, config.beam_width)]
            scores = await ctx.score(kids)
            (best,) = top_k(kids, scores, 1)
            path.append(best)
            value = max(scores)
        for node in path:
            visits[node] += 1
            value_sum[node] += value
