"""MCTS, the baseline the papers beat: UCT selection with the verifier's score as value.

Each of the N iterations walks down by UCT (C = ``mcts_c``) to a leaf. An open
leaf is expanded with M children (one request) scored in one verifier call:
every child keeps its score as its first visit, and all M are backed up the
path, so a node's visits are always those of its children (plus its own
evaluation). A finished leaf costs the iteration too: its score (0 for a path
that ended without an answer) is backed up once, with no request. The
candidates are the finished paths the walks reached (a finished leaf, or the
best child of an expansion), so at most N.
"""

from __future__ import annotations

from collections import defaultdict

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.tree import ROOT
from treesearch.strategies.select import top_k, uct


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
            reach = leaf
            scores = await ctx.score([leaf])
        else:
            kids = [child.id for child in await ctx.expand(leaf, config.beam_width)]
            scores = await ctx.score(kids)
            for kid, score in zip(kids, scores, strict=True):
                visits[kid], value_sum[kid] = 1, score
            (reach,) = top_k(kids, scores, 1)
        if tree.node(reach).answer is not None and reach not in reached:
            reached.append(reach)
        for node in path:
            visits[node] += len(scores)
            value_sum[node] += sum(scores)
