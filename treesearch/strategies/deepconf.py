"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): confidence-filtered voting.

Every trace is a whole solution sampled with ``deepconf_top_k`` top logprobs a token
(20, the most OpenAI and vLLM give), scored by its confidence (``treesearch.answers.confidence``:
the lowest mean over a window of ``confidence_window`` tokens by default). A trace's
confidence stands in as its path score, and the answer is the confidence-weighted vote
of the traces kept.

- Offline (``deepconf_warmup`` = 0): N traces in one request; the kept ones score at
  least the (1 − η) quantile of the N scores (η = ``deepconf_keep``: 0.9 keeps the top
  90%, 0.1 the top 10%).
- Online: ``deepconf_warmup`` traces W in one request set the threshold s, the (1 − η)
  quantile of their scores; those scoring at least s vote. The other N − W traces stream
  at once (each its own request, within the endpoint's concurrency limit), and each is cut
  (closed, its tokens so far charged, ``finish_reason="low_confidence"``) as soon as the
  mean of a window of its last ``confidence_window`` tokens falls below s, every window
  judged however many tokens a streamed piece carries, and a trace shorter than the window
  judged whole at its end; so a trace votes by the same rule whether it came in the warm-up
  or later: no window under s. Once one answer holds ``deepconf_stop`` of the voting
  weight (checked after the warm-up and as each trace finishes), the streams still running
  are cancelled (marked "cancelled", charged what they streamed).

A server that sends no logprobs gives nothing to weigh: the first trace without
confidences stops the search with a ConfigError naming logprobs, rather than a vote on
zeros. A budget (or deadline) that stops the traces midway leaves those that finished in
the tree, and they vote.

The window scales with the traces: left unset it is an eighth of the median length of
the traces that set the threshold (at least 4 tokens), since DeepConf's 2,048 tokens
suit chains of thought of tens of thousands, not of a hundred; traces that think (a
reasoning model's) take the paper's 2,048 (a trace shorter than that is one window).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from statistics import median

import anyio

from treesearch.answers.confidence import WindowGuard, percentile, trace_score
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node
from treesearch.errors import BudgetExhausted, ConfigError
from treesearch.logs import get_logger

log = get_logger(__name__)
MIN_WINDOW = 4
THINKING_WINDOW = 2048  # the paper's window for long reasoning traces


def window_for(config: SearchConfig, traces: Sequence[Node]) -> int:
    """The configured window, else the paper's 2,048 tokens for traces that think, else an
    eighth of the traces' median length (at least 4)."""
    if config.confidence_window is not None:
        return config.confidence_window
    if any(node.thinking is not None for node in traces):
        return THINKING_WINDOW
    lengths = [len(node.confidences or ()) for node in traces] or [0]
    return max(MIN_WINDOW, round(median(lengths) / 8))


def confidences_of(ctx: SearchContext, trace: Node) -> tuple[float, ...]:
    """A trace's token confidences; a trace with tokens and none means the server ignores
    ``logprobs``, and DeepConf cannot run on it."""
    if trace.confidences is None and trace.tokens:
        raise ConfigError(
            f"DeepConf needs token logprobs with top_logprobs, and {ctx.policy.endpoint} sent none; "
            "serve the model where they are returned (vLLM, SGLang, llama.cpp's server) or choose "
            "another strategy"
        )
    return trace.confidences or ()


def warm_up(ctx: SearchContext, config: SearchConfig, kept: list[int]) -> tuple[int, float]:
    """Score the traces in the tree (the first request's), keep those at or above the
    threshold they set, and return the window and the threshold."""
    traces = ctx.tree.children(ROOT)
    confidences = {node.id: confidences_of(ctx, node) for node in traces}
    window = window_for(config, traces)
    scores = {node.id: trace_score(confidences[node.id], window, config.trace_score) for node in traces}
    threshold = percentile(list(scores.values()), 1.0 - config.deepconf_keep) if scores else 0.0
    for node in traces:
        ctx.tree.update(node.id, scores=(scores[node.id],))
    kept += [node.id for node in traces if node.answer is not None and scores[node.id] >= threshold]
    log.debug("deepconf_threshold", problem_id=ctx.problem.id, window=window, threshold=threshold,
              warmup=list(scores.values()))  # fmt: skip
    return window, threshold


async def deepconf(ctx: SearchContext, config: SearchConfig) -> None:
    kept: list[int] = []
    ctx.candidates = kept
    first = config.deepconf_warmup or config.n
    try:
        await ctx.expand(ROOT, first, whole=True, logprobs=config.deepconf_top_k)
    except (BudgetExhausted, anyio.get_cancelled_exc_class()):
        warm_up(ctx, config, kept)  # the traces that finished before the budget or deadline
        raise
    window, threshold = warm_up(ctx, config, kept)
    if not config.deepconf_warmup:
        return

    async def settled() -> bool:
        if config.deepconf_stop is None:
            return False
        members = list(kept)
        answers = [ctx.tree.node(node).answer or "" for node in members]
        groups = await anyio.to_thread.run_sync(ctx.equivalence.group, answers)
        weights: dict[int, float] = {}
        for node, group in zip(members, groups, strict=True):
            weights[group] = weights.get(group, 0.0) + (ctx.path_score(node) or 0.0)
        total = sum(weights.values())
        return total > 0 and max(weights.values()) / total >= config.deepconf_stop

    async def trace(scope: anyio.CancelScope) -> None:
        guard = WindowGuard(window, threshold)
        node = await ctx.stream_child(ROOT, whole=True, logprobs=config.deepconf_top_k, keep=guard)
        confidences = confidences_of(ctx, node)
        if node.answer is None:
            return
        ctx.tree.update(node.id, scores=(trace_score(confidences, window, config.trace_score),))
        kept.append(node.id)
        if await settled():
            scope.cancel()

    if await settled():
        return
    with anyio.CancelScope() as scope:
        await gather([partial(trace, scope)] * (config.n - first))

