"""The compute-optimal strategy (Snell et al.): probe a problem, bin its difficulty, run
what the policy table chose for that level and N.

The probe is k whole samples in one request, scored by the verifier for the
predicted kind, checked against the gold answer for the oracle kind; it is charged
to the problem's budget like every other call, and the chosen strategy runs on what
is left of it, in the same tree. The probe's samples are not the chosen
strategy's candidates: the table was fitted on that strategy alone.
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from treesearch.config import SearchConfig
from treesearch.context import SearchContext
from treesearch.difficulty import Cell
from treesearch.errors import ConfigError
from treesearch.tree import ROOT, NodeStatus


def apply_cell(cell: Cell, config: SearchConfig) -> SearchConfig:
    """``config`` running ``cell``: its strategy, N and options (M, T_b, ratio, aggregator)."""
    options = dict(cell.options)
    options.setdefault("aggregator", None)
    return replace(config, strategy=cell.strategy, n=cell.n, policy_table=None, **options)


async def difficulty(ctx: SearchContext, k: int, kind: str) -> float:
    """The probe: ``k`` whole samples, and the mean of their final verifier scores
    (``predicted``) or the fraction that reach the gold answer (``oracle``); a sample
    without an answer counts 0."""
    samples = await ctx.expand(ROOT, k, whole=True)
    answered = [node for node in samples if node.status is NodeStatus.ANSWERED]
    if kind == "predicted":
        scores = await ctx.score([node.id for node in answered]) if answered else []
        return sum(scores) / len(samples)
    gold = ctx.problem.answer
    if gold is None:
        raise ConfigError("oracle difficulty needs the problem's gold answer")
    same = ctx.equivalence

    def right() -> list[bool]:
        return [same.matches(node.answer or "", gold) for node in answered]

    return sum(await anyio.to_thread.run_sync(right)) / len(samples)


async def adaptive(ctx: SearchContext, config: SearchConfig) -> None:
    from treesearch.strategies import get_strategy  # the registry holds this routine

    table = config.policy_table
    assert table is not None  # SearchConfig refuses adaptive without one
    value = await difficulty(ctx, table.probe_k, table.bins.kind)
    probed = {node.id for node in ctx.tree.terminals()}
    level = table.bins.level(value)
    cell = table.choose(level, config.n)
    chosen = apply_cell(cell, config)
    ctx.chosen = chosen
    ctx.choice = {
        "difficulty": round(value, 6),
        "level": level,
        "strategy": cell.strategy,
        "n": cell.n,
        "options": dict(cell.options),
    }
    try:
        await get_strategy(chosen.strategy).run(ctx, chosen)
    finally:
        if ctx.candidates is None:  # a strategy that offers every finished path
            ctx.candidates = [node.id for node in ctx.tree.terminals() if node.id not in probed]
