"""REBASE (Wu et al. 2024): reward-balanced expansion.

Start with N first steps. At each depth, score the open nodes in one verifier
call, take the paths that finished (with an answer or not, as in the paper's
code) off the remaining width B, and give each open node
``round(B · softmax(score / T_b))`` children (summing to B exactly), until N
paths have finished.
"""

from __future__ import annotations

from collections.abc import Sequence

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.logs import get_logger
from treesearch.strategies.frontier import grow
from treesearch.strategies.select import rebase_widths

log = get_logger(__name__)


async def rebase(ctx: SearchContext, config: SearchConfig) -> None:
    def widths(open_ids: Sequence[int], scores: Sequence[float], finished: Sequence[int]) -> list[int]:
        chosen = rebase_widths(scores, config.n - len(finished), config.rebase_temperature)
        log.debug("rebase_widths", problem_id=ctx.problem.id, nodes=list(open_ids), widths=chosen)
        return chosen

    await grow(ctx, config, widths=widths, stop=lambda finished: len(finished) >= config.n)
