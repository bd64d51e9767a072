"""The round loop beam, lookahead and REBASE share: score a frontier, choose widths, expand.

Each round sends one verifier call holding the open nodes' values (for lookahead,
the ends of their greedy rollouts) and the paths that finished in the round, so a
search cut short by its budget still has its finished paths scored. Only the
width rule and the stopping rule differ between the strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node
from treesearch.errors import BudgetExhausted

# (open node ids, their values, finished node ids so far) -> children per open node
WidthRule = Callable[[Sequence[int], Sequence[float], Sequence[int]], Sequence[int]]
StopRule = Callable[[Sequence[int]], bool]


async def grow(
    ctx: SearchContext, config: SearchConfig, *, widths: WidthRule, stop: StopRule, lookahead: int = 0
) -> None:
    """Grow N first steps round by round until ``stop(finished)`` or nothing is open; every
    finished path becomes a candidate (``ctx.candidates``) as soon as it appears."""
    finished = ctx.candidates = []
    frontier = (await _expand(ctx, {ROOT: config.n}, finished))[ROOT]
    while True:
        ended = [node.id for node in frontier if node.terminal]
        open_ids = [node.id for node in frontier if not node.terminal]
        finished += ended
        done = stop(finished) or not open_ids
        valued = [] if done else await _value_nodes(ctx, open_ids, lookahead)
        scores = await ctx.score([*valued, *(node for node in ended if ctx.tree.node(node).answer)])
        if done:
            return
        plan = widths(open_ids, scores[: len(valued)], finished)
        children = await _expand(ctx, dict(zip(open_ids, plan, strict=True)), finished)
        frontier = [child for node in open_ids for child in children.get(node, [])]


async def _expand(
    ctx: SearchContext, widths: Mapping[int, int], finished: list[int]
) -> dict[int, list[Node]]:
    """``ctx.expand_many``; when the budget refuses it partway, the children that did arrive
    and finished join ``finished`` before the refusal ends the search."""
    first_new = len(ctx.tree)
    try:
        return await ctx.expand_many(widths)
    except BudgetExhausted:
        arrived = ctx.tree.nodes()[first_new:]
        finished += [node.id for node in arrived if node.terminal and node.parent in widths]
        raise


async def _value_nodes(ctx: SearchContext, node_ids: list[int], steps: int) -> list[int]:
    """The nodes whose scores value ``node_ids``: themselves, or (``steps`` > 0) the ends of
    their greedy rollouts of up to ``steps`` more steps."""
    if not steps:
        return node_ids
    rolled = await gather([partial(ctx.rollout, node, temperature=0.0, max_steps=steps) for node in node_ids])
    return [node.id for node in rolled]
