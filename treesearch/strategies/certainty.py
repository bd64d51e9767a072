"""Selection by self-certainty (Kang, Zhao, Song 2025): no verifier, only the model's own
token distributions.

N whole solutions are sampled in one request (topped up as the endpoint allows) with
``certainty_top_k`` top logprobs a token; each trace's score is its self-certainty, the mean
over its tokens of the top-k estimate in ``treesearch.answers.certainty`` (with the vocabulary
size ``--vocab-size``). A reasoning model's trace is scored whole, thinking and answer, as far
as the server's logprobs cover it. ``self-certainty`` then takes the most certain trace's
answer (best-of-N by score), ``borda`` ranks the traces and votes (``answers.aggregate``'s
``borda_vote``); any score-based aggregator may be named instead.

A server that sends no logprobs gives nothing to rank: the first trace with tokens and no
certainties stops the search with a ConfigError naming logprobs, as DeepConf does, rather than
a pick among zeros. A budget (or deadline) that stops the sampling midway leaves the traces
that came back in the tree, scored, and they are chosen from.
"""

from __future__ import annotations

import anyio

from treesearch.answers.certainty import trace_certainty
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.tree import ROOT
from treesearch.errors import BudgetExhausted, ConfigError


def score_traces(ctx: SearchContext) -> None:
    """Score every trace under the root by its self-certainty, and offer them all."""
    traces = ctx.tree.children(ROOT)
    for trace in traces:
        if trace.certainties is None and trace.tokens:
            raise ConfigError(
                f"self-certainty needs token logprobs with top_logprobs, and {ctx.policy.endpoint} sent "
                "none; serve the model where they are returned (vLLM, SGLang, llama.cpp's server) or "
                "choose another strategy"
            )
        ctx.tree.update(trace.id, scores=(trace_certainty(trace.certainties or ()),))
    ctx.candidates = [trace.id for trace in traces]


async def self_certainty(ctx: SearchContext, config: SearchConfig) -> None:
    ctx.candidates = []  # none until scored: a refusal chooses nothing
    try:
        await ctx.expand(ROOT, config.n, whole=True, logprobs=config.certainty_top_k)
    except (BudgetExhausted, anyio.get_cancelled_exc_class()):
        score_traces(ctx)  # the traces that came back before the budget or deadline
        raise
    score_traces(ctx)
