"""MCTS, the baseline the papers beat: UCT selection with the verifier's score as value.

Each of the N iterations walks down by UCT (C = ``mcts_c``) to a leaf. An open
leaf is expanded with M children (one request) scored in one verifier call;
every child keeps its score as its first visit, and the best child's score is
backed up the path. A finished leaf costs the iteration too: its score (0 for a
path that ended without an answer) is backed up, with no request. The
candidates are the finished paths the walks reached, so at most N.
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
    reached: list[int] = []
    ctx.candidates = reached
    for _ in range(config.n):
        path = [ROOT]
        while children := tree.children(path[-1]):
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
            for kid, score in zip(kids, scores, strict=True):
                visits[kid], value_sum[kid] = 1, score
            (best,) = top_k(kids, scores, 1)
            path.append(best)
            value = max(scores)
        if tree.node(path[-1]).answer is not None and path[-1] not in reached:
            reached.append(path[-1])
        for node in path if tree.node(leaf).terminal else path[:-1]:
            visits[node] += 1
            value_sum[node] += value
