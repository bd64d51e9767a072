"""The compute-optimal strategy (Snell et al.): probe a problem, bin its difficulty, run
what the policy table chose for that level and N.

The probe is k whole samples in one request, scored by the verifier for the
predicted kind, checked against the gold answer for the oracle kind; it is charged
to the problem's budget like every other call, and the chosen strategy runs on what
is left of it. The probe grows a tree of its own and draws its own seeds, so the
chosen strategy neither sees its samples nor repeats them: the table was fitted on
each strategy alone, with the probe drawn apart in the same way.
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.tree import ROOT, NodeStatus
from treesearch.errors import ConfigError
from treesearch.optimal.difficulty import Cell


def apply_cell(cell: Cell, config: SearchConfig) -> SearchConfig:
    """``config`` running ``cell``: its strategy, N and options (M, T_b, ratio, aggregator)."""
    options = dict(cell.options)
    options.setdefault("aggregator", None)
    return replace(config, strategy=cell.strategy, n=cell.n, policy_table=None, **options)


async def difficulty(ctx: SearchContext, k: int, kind: str) -> float:
    """The probe: ``k`` whole samples under ``ctx`` (seeded apart from its other requests),
    and the mean of their final verifier scores (``predicted``) or the fraction that reach
    the gold answer (``oracle``); a sample without an answer counts 0."""
    samples = await ctx.expand(ROOT, k, whole=True, stream="probe")
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


def probe_context(ctx: SearchContext) -> SearchContext:
    """A context for the probe: the same problem, endpoints and budget as ``ctx``, a tree of its
    own, so no strategy ever sees the probe's samples."""
    return SearchContext(
        ctx.problem,
        ctx.policy,
        ctx.budget,
        sampling=ctx.sampling,
        step_format=ctx.step_format,
        verifier=ctx.verifier,
        finish_check=ctx.finish_check,
        reduction=ctx.reduction,
        equivalence=ctx.equivalence,
    )


async def choose(ctx: SearchContext, config: SearchConfig) -> SearchConfig:
    """Probe the problem, bin its difficulty and return the configuration the policy table
    chose for that level and N (recorded on ``ctx`` as ``chosen`` and ``choice``); the
    registry's ``adaptive`` routine then runs it."""
    table = config.policy_table
    assert table is not None  # SearchConfig refuses adaptive without one
    value = await difficulty(probe_context(ctx), table.probe_k, table.bins.kind)
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
    return chosen
